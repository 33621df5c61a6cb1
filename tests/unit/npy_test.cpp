// The .npy header parser and the C-order little-endian conversion: files numpy wrote (every
// supported dtype, 0-d, empty, big-endian, Fortran order, versions 2.0 and 3.0) compared
// value by value with the bytes numpy computes, numpy's refused dtypes, and headers written
// by hand to break each rule.
#include "../../src/npy/npy.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "../../src/zip/archive.hpp"
#include "../fixtures/zip/fixtures.hpp"
#include "python_fixtures.hpp"
#include "safetensors/error.hpp"
#include "test_files.hpp"

namespace safetensors::detail::npy {
namespace {

using Bytes = std::vector<std::byte>;

Bytes bytes_of(std::string_view s) {
  Bytes out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

// A .npy file the way numpy lays it out: magic, version, header length, the dict padded
// with spaces and a newline to a multiple of 64, then `data_size` bytes.
Bytes npy_file(std::string_view dict, std::size_t data_size, int major = 1) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  std::string header(dict);
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  for (std::size_t i = 0; i < prefix - 8; ++i) {
    out += static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  }
  out += header;
  out += std::string(data_size, '\x01');
  return bytes_of(out);
}

ArrayHeader parse(const Bytes& file) {
  return parse_array_header(file, file.size(), "test.npy");
}

std::vector<std::uint64_t> parse_shape(const std::string& text) {
  std::vector<std::uint64_t> shape;
  if (text == "-") return shape;
  std::stringstream in(text);
  for (std::string dim; std::getline(in, dim, ',');) shape.push_back(std::stoull(dim));
  return shape;
}

template <class F>
void expect_error(F&& f, ErrorCode code, std::string_view fragment) {
  try {
    f();
    ADD_FAILURE() << "expected " << error_code_name(code) << " (" << fragment << ")";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("test.npy: ", 0), 0u) << e.what();
  }
}

void expect_malformed(const Bytes& file, std::string_view fragment) {
  expect_error([&] { parse(file); }, ErrorCode::invalid_checkpoint, fragment);
}

constexpr std::string_view good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

// ---- headers written by hand ----

TEST(Npy, ParsesNumpysLayout) {
  const Bytes file = npy_file(good, 24);
  const ArrayHeader h = parse(file);
  EXPECT_EQ(h.dtype, Dtype::F32);
  EXPECT_FALSE(h.big_endian);
  EXPECT_FALSE(h.fortran_order);
  EXPECT_EQ(h.shape, (std::vector<std::uint64_t>{2, 3}));
  EXPECT_EQ(h.data_offset, 128u);
  EXPECT_EQ(h.data_size, 24u);
  EXPECT_EQ(h.descr, "<f4");
  // The prefix only needs to hold the header.
  EXPECT_EQ(parse_array_header(std::span(file).first(128), file.size(), "test.npy").data_size, 24u);
  EXPECT_TRUE(looks_like_npy(file));
  EXPECT_FALSE(looks_like_npy(bytes_of("\x93NUMP")));
  EXPECT_FALSE(looks_like_npy(bytes_of("PK\x03\x04\x00\x00")));
}

TEST(Npy, AcceptsLiteralVariants) {
  struct Case {
    std::string dict;
    Dtype dtype;
    bool big;
    bool fortran;
    std::vector<std::uint64_t> shape;
  };
  const std::vector<Case> cases = {
      {R"({"shape": (3,), "descr": "<i8", "fortran_order": True})", Dtype::I64, false, true, {3}},
      {"{'descr':'>u2','fortran_order':False,'shape':()}", Dtype::U16, true, false, {}},
      {"{ 'descr' : '=f8' , 'fortran_order' : False , 'shape' : ( 2 , 3 , ) , }",
       Dtype::F64,
       false,
       false,
       {2, 3}},
      {"{'descr': '|u1', 'fortran_order': False, 'shape': (3L, 4L)}",
       Dtype::U8,
       false,
       false,
       {3, 4}},
      {"{'descr': '>i1', 'fortran_order': False, 'shape': (0,)}", Dtype::I8, false, false, {0}},
      {"{'descr': '|b1', 'fortran_order': False, 'shape': (1, 0, 2)}",
       Dtype::BOOL,
       false,
       false,
       {1, 0, 2}},
      {"{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}", Dtype::C64, false, false, {1}},
      {"{'descr': '<f2', 'fortran_order': False, 'shape': (1,)}", Dtype::F16, false, false, {1}},
  };
  for (const Case& c : cases) {
    std::uint64_t elements = 1;
    for (auto d : c.shape) elements *= d;
    const auto size = elements * dtype_bits(c.dtype) / 8;
    for (const int major : {1, 2, 3}) {
      const ArrayHeader h = parse(npy_file(c.dict, size, major));
      EXPECT_EQ(h.dtype, c.dtype) << c.dict;
      EXPECT_EQ(h.big_endian, c.big) << c.dict;
      EXPECT_EQ(h.fortran_order, c.fortran) << c.dict;
      EXPECT_EQ(h.shape, c.shape) << c.dict;
      EXPECT_EQ(h.data_size, size) << c.dict;
      EXPECT_EQ(h.data_offset % 64, 0u) << c.dict;
    }
  }
}

TEST(Npy, RefusesBadMagicAndVersions) {
  Bytes file = npy_file(good, 24);
  Bytes magic = file;
  magic[5] = std::byte{'X'};
  expect_malformed(magic, "no .npy magic");
  for (const auto& [major, minor] : {std::pair{4, 0}, std::pair{0, 0}, std::pair{1, 1}}) {
    Bytes version = file;
    version[6] = static_cast<std::byte>(major);
    version[7] = static_cast<std::byte>(minor);
    expect_malformed(version, "unsupported format version " + std::to_string(major) + "." +
                                  std::to_string(minor));
  }
}

TEST(Npy, RefusesTruncatedHeaders) {
  const Bytes file = npy_file(good, 24);
  expect_malformed(Bytes(file.begin(), file.begin() + 9), "too short");
  expect_malformed(Bytes(file.begin(), file.begin() + 40), "runs past the end");
  Bytes v2 = npy_file(good, 24, 2);
  expect_malformed(Bytes(v2.begin(), v2.begin() + 11), "too short for a version 2.0 header");
  // The caller gave too short a prefix of a long enough file.
  expect_error(
      [&] { (void)parse_array_header(std::span(file).first(40), file.size(), "test.npy"); },
      ErrorCode::invalid_checkpoint, "only 40 bytes of the 128-byte header");
}

TEST(Npy, RefusesHeaderLengthBeyondTheFile) {
  Bytes file = npy_file(good, 24);
  file[8] = std::byte{0xFF};
  file[9] = std::byte{0x7F};
  expect_malformed(file, "header length 32767 runs past the end (152 bytes)");
  Bytes v2 = npy_file(good, 24, 2);
  v2[11] = std::byte{0xFF};
  expect_malformed(v2, "runs past the end");
}

class NpyMalformed : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(NpyMalformed, Refused) {
  const auto& [dict, fragment] = GetParam();
  expect_malformed(npy_file(dict, 24), fragment);
}

using P = std::pair<std::string, std::string>;
INSTANTIATE_TEST_SUITE_P(
    Literals, NpyMalformed,
    ::testing::Values(
        P{"{'descr': '<f4', 'fortran_order': False}", "no 'shape'"},
        P{"{'fortran_order': False, 'shape': (2, 3)}", "no 'descr'"},
        P{"{'descr': '<f4', 'shape': (2, 3)}", "no 'fortran_order'"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}",
          "unexpected key `extra`"},
        P{"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}",
          "appears twice"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3)}", "negative dimension"},
        P{"{'descr': '<f4, 'fortran_order': False, 'shape': (2, 3)}", "after the value of `descr`"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x", "unterminated string"},
        P{"{'descr': {'a': 1}, 'fortran_order': False, 'shape': (2, 3)}",
          "expected a string for the descr"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': ((2,), 3)}", "expected a dimension"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3]}", "expected a tuple"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': (6)}", "an int, not a tuple"},
        P{"{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}", "True or False"},
        P{"{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2, 3)}", "expected `,` or `}`"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}", "expected `,` or `)`"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}}", "after the dict"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} x", "after the dict"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", "expected `,` or `}`"},
        P{"{'descr': '<f\\x34', 'fortran_order': False, 'shape': (2, 3)}", "escape sequence"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 3)}",
          "overflows 64 bits"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}",
          "overflows 64 bits"},
        P{"[('descr', '<f4')]", "dict literal"}, P{"", "dict literal"},
        P{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3),,}", "expected a string"}));

TEST(Npy, RefusesUnsupportedDescrs) {
  for (const std::string descr : {"|O", "<c16", ">c16", "<U2", "|S2", "|V8", "<M8[D]", "<m8[s]",
                                  "<f16", "<i4 ", "f4", "|i4", "<b1x", "<u16", ""}) {
    const std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (2,)}";
    const std::string shown = "`" + descr + "`";
    expect_error([&] { parse(npy_file(dict, 8)); }, ErrorCode::unsupported_checkpoint, shown);
  }
  expect_error(
      [&] { parse(npy_file("{'descr': '|O', 'fortran_order': False, 'shape': (2,)}", 8)); },
      ErrorCode::unsupported_checkpoint, "pickle");
  expect_error(
      [&] { parse(npy_file("{'descr': '<c16', 'fortran_order': False, 'shape': (2,)}", 32)); },
      ErrorCode::unsupported_checkpoint, "complex128");
  expect_error(
      [&] {
        parse(npy_file("{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (2,)}", 8));
      },
      ErrorCode::unsupported_checkpoint, "structured");
}

TEST(Npy, RefusesTrailingAndShortData) {
  expect_malformed(npy_file(good, 25), "25 data bytes follow the header, but shape [2, 3]");
  expect_malformed(npy_file(good, 23), "needs 24");
  expect_malformed(npy_file(good, 0), "0 data bytes");
}

// ---- conversion, checked by hand ----

ArrayHeader header_of(std::string_view dict, std::uint64_t size) {
  return parse(npy_file(dict, size));
}

Bytes convert(const ArrayHeader& h, const Bytes& data) {
  Bytes out(data.size());
  to_c_order_little_endian(h, data, out);
  return out;
}

TEST(NpyConvert, TransposesFortranOrder) {
  // A 2x3 array [[0, 1, 2], [3, 4, 5]] in Fortran order is 0 3 1 4 2 5.
  const ArrayHeader h = header_of("{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3)}", 6);
  EXPECT_EQ(convert(h, test::as_bytes(std::vector<std::uint8_t>{0, 3, 1, 4, 2, 5})),
            test::as_bytes(std::vector<std::uint8_t>{0, 1, 2, 3, 4, 5}));
  // 2x2x2: element (i, j, k) = 4i + 2j + k sits at i + 2j + 4k.
  const ArrayHeader h3 =
      header_of("{'descr': '<u2', 'fortran_order': True, 'shape': (2, 2, 2)}", 16);
  std::vector<std::uint16_t> fortran(8), c_order(8);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      for (int k = 0; k < 2; ++k) {
        fortran[i + 2 * j + 4 * k] = static_cast<std::uint16_t>(4 * i + 2 * j + k);
        c_order[4 * i + 2 * j + k] = static_cast<std::uint16_t>(4 * i + 2 * j + k);
      }
    }
  }
  EXPECT_EQ(convert(h3, test::as_bytes(fortran)), test::as_bytes(c_order));
}

TEST(NpyConvert, SwapsBytesPerElementOrComponent) {
  const ArrayHeader h = header_of("{'descr': '>u4', 'fortran_order': False, 'shape': (2,)}", 8);
  EXPECT_EQ(convert(h, bytes_of(std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8))),
            bytes_of(std::string("\x04\x03\x02\x01\x08\x07\x06\x05", 8)));
  const ArrayHeader c = header_of("{'descr': '>c8', 'fortran_order': False, 'shape': (1,)}", 8);
  EXPECT_EQ(convert(c, bytes_of(std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8))),
            bytes_of(std::string("\x04\x03\x02\x01\x08\x07\x06\x05", 8)));
  const ArrayHeader plain = header_of(good, 24);
  Bytes data(24);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i);
  EXPECT_EQ(convert(plain, data), data);
}

TEST(NpyConvert, RefusesWrongBufferSizes) {
  const ArrayHeader h = header_of(good, 24);
  Bytes data(24), out(23);
  try {
    to_c_order_little_endian(h, data, out);
    ADD_FAILURE() << "a 23-byte output was accepted for 24 bytes";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
  }
}

// ---- files numpy wrote ----

class NpyFromNumpy : public ::testing::Test {
 protected:
  void SetUp() override {
    static const test::Generated generated = test::zip_fixtures("make_npy.py");
    if (generated.status == -1 && !test::have_python()) {
      GTEST_SKIP() << test::python_interpreter() << " is missing";
    }
    if (generated.status == test::missing_module_status) {
      GTEST_SKIP() << "numpy is not installed for " << test::python_interpreter();
    }
    ASSERT_EQ(generated.status, 0) << "tests/fixtures/zip/make_npy.py failed";
    dir_ = generated.dir;
  }
  std::filesystem::path dir_;
};

TEST_F(NpyFromNumpy, EveryCaseMatchesNumpysBytes) {
  std::size_t cases = 0;
  for (const auto& row : test::read_manifest(dir_)) {
    if (row[0] != "ok") continue;
    ASSERT_EQ(row.size(), 6u);
    ++cases;
    const std::string& name = row[1];
    const Bytes file = test::read_bytes(dir_ / (name + ".npy"));
    const ArrayHeader h = parse_array_header(file, file.size(), name);
    EXPECT_EQ(dtype_name(h.dtype), row[2]) << name;
    EXPECT_EQ(h.big_endian, row[3] == "1") << name;
    EXPECT_EQ(h.fortran_order, row[4] == "1") << name;
    EXPECT_EQ(h.shape, parse_shape(row[5])) << name;
    EXPECT_EQ(h.data_offset + h.data_size, file.size()) << name;
    const Bytes expected = test::read_bytes(dir_ / (name + ".bytes"));
    ASSERT_EQ(h.data_size, expected.size()) << name;
    Bytes out(h.data_size);
    to_c_order_little_endian(h, std::span(file).subspan(h.data_offset), out);
    EXPECT_EQ(out, expected) << name;
  }
  EXPECT_GE(cases, 30u);
}

TEST_F(NpyFromNumpy, RefusesWhatSafetensorsCannotHold) {
  std::size_t cases = 0;
  for (const auto& row : test::read_manifest(dir_)) {
    if (row[0] != "refused") continue;
    ++cases;
    const Bytes file = test::read_bytes(dir_ / (row[1] + ".npy"));
    try {
      (void)parse_array_header(file, file.size(), "test.npy");
      ADD_FAILURE() << row[1] << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::unsupported_checkpoint) << e.what();
      EXPECT_NE(std::string(e.what()).find(row[2]), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("test.npy: ", 0), 0u) << e.what();
    }
  }
  EXPECT_EQ(cases, 8u);
}

TEST_F(NpyFromNumpy, NpzMembers) {
  std::size_t archives = 0;
  for (const auto& row : test::read_manifest(dir_)) {
    if (row[0] != "npz") continue;
    ++archives;
    const auto source = open_mmap_source(dir_ / row[1]);
    const zip::Archive archive = zip::Archive::open(*source);
    ASSERT_EQ(archive.entries().size(), 3u);
    for (const zip::Entry& e : archive.entries()) {
      const Bytes npy = archive.read(e);
      const ArrayHeader h = parse_array_header(npy, npy.size(), e.name);
      Bytes out(h.data_size);
      to_c_order_little_endian(h, std::span(npy).subspan(h.data_offset), out);
      EXPECT_EQ(out, test::read_bytes(dir_ / (row[1] + "." + e.name + ".bytes"))) << e.name;
    }
  }
  EXPECT_EQ(archives, 2u);
}

}  // namespace
}  // namespace safetensors::detail::npy
