// The strict zip reader: archives built byte by byte here (a small writer independent of the
// reader), archives written by Python's zipfile, torch.save and numpy.savez, and one test per
// refusal, each checking the code and that the message names the entry.
#include "../../src/zip/archive.hpp"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "../fixtures/zip/fixtures.hpp"
#include "python_fixtures.hpp"
#include "safetensors/error.hpp"
#include "test_files.hpp"

namespace safetensors::detail::zip {
namespace {

using Bytes = std::vector<std::byte>;

Bytes bytes_of(std::string_view s) {
  Bytes out(s.size());
  if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  return out;
}

std::string text_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

std::uint32_t crc_of(std::span<const std::byte> b) {
  return static_cast<std::uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(b.data()), b.size()));
}

void put(Bytes& out, std::uint64_t v, int width) {
  for (int i = 0; i < width; ++i) out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
}

void patch(Bytes& b, std::uint64_t at, std::uint64_t v, int width) {
  for (int i = 0; i < width; ++i) b.at(at + i) = static_cast<std::byte>((v >> (8 * i)) & 0xFF);
}

Bytes raw_deflate(std::span<const std::byte> data) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
  Bytes out(deflateBound(&z, data.size()));
  z.next_in = const_cast<Bytef*>(reinterpret_cast<const Bytef*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

constexpr std::uint64_t ph32 = 0xFFFFFFFF;

// One member as the test writes it; every field can be made to lie.
struct Member {
  std::string name;
  Bytes payload;  // the bytes as they lie in the archive (compressed when method 8)
  std::uint16_t method = 0;
  std::uint32_t crc = 0;
  std::uint64_t size = 0;  // uncompressed
  std::uint16_t flags = 0;
  bool descriptor = false;  // bit 3, zero sizes in the local header, a descriptor after the data
  bool descriptor_signature = true;
  bool zip64 = false;  // placeholders and ZIP64 fields in both headers
  std::optional<std::string> local_name;
  std::optional<std::uint16_t> local_flags;
  std::optional<std::uint64_t> offset;  // the central directory's local header offset
  bool write_local = true;
  std::string junk_after;  // bytes after the local record that belong to no entry
};

Member stored(std::string name, std::string_view data) {
  Member m;
  m.name = std::move(name);
  m.payload = bytes_of(data);
  m.crc = crc_of(m.payload);
  m.size = data.size();
  return m;
}

Member deflated(std::string name, std::string_view data) {
  Member m = stored(std::move(name), data);
  m.method = 8;
  m.payload = raw_deflate(bytes_of(data));
  return m;
}

struct Options {
  bool zip64_end = false;     // write the ZIP64 end record and locator
  bool placeholders = false;  // and put 0xFFFF/0xFFFFFFFF in the classic end record
  std::string comment;
  std::string prefix;  // bytes before the first local header
};

Options zip64_end(bool placeholders) {
  Options o;
  o.zip64_end = true;
  o.placeholders = placeholders;
  return o;
}

Options with_comment(std::string comment) {
  Options o;
  o.comment = std::move(comment);
  return o;
}

struct Built {
  Bytes bytes;
  std::vector<std::uint64_t> local;    // offset of each member's local header (if written)
  std::vector<std::uint64_t> central;  // offset of each member's central record
  std::uint64_t directory = 0;
  std::uint64_t end = 0;        // classic end record
  std::uint64_t zip64_end = 0;  // ZIP64 end record, when written
};

Bytes local_record(const Member& m) {
  Bytes out;
  const std::uint16_t flags = m.local_flags.value_or(m.flags | (m.descriptor ? 8 : 0));
  const std::string& name = m.local_name.value_or(m.name);
  put(out, 0x04034b50, 4);
  put(out, m.zip64 ? 45 : 20, 2);
  put(out, flags, 2);
  put(out, m.method, 2);
  put(out, 0, 2);
  put(out, 0x21, 2);
  put(out, m.descriptor ? 0 : m.crc, 4);
  put(out, m.zip64 ? ph32 : m.descriptor ? 0 : m.payload.size(), 4);
  put(out, m.zip64 ? ph32 : m.descriptor ? 0 : m.size, 4);
  put(out, name.size(), 2);
  put(out, m.zip64 ? 20 : 0, 2);
  for (char c : name) out.push_back(static_cast<std::byte>(c));
  if (m.zip64) {
    put(out, 1, 2);
    put(out, 16, 2);
    put(out, m.descriptor ? 0 : m.size, 8);
    put(out, m.descriptor ? 0 : m.payload.size(), 8);
  }
  out.insert(out.end(), m.payload.begin(), m.payload.end());
  if (m.descriptor) {
    if (m.descriptor_signature) put(out, 0x08074b50, 4);
    put(out, m.crc, 4);
    put(out, m.payload.size(), m.zip64 ? 8 : 4);
    put(out, m.size, m.zip64 ? 8 : 4);
  }
  return out;
}

Built build(const std::vector<Member>& members, const Options& options = {}) {
  Built b;
  b.bytes = bytes_of(options.prefix);
  for (const Member& m : members) {
    b.local.push_back(b.bytes.size());
    if (!m.write_local) continue;
    const Bytes record = local_record(m);
    b.bytes.insert(b.bytes.end(), record.begin(), record.end());
    for (char c : m.junk_after) b.bytes.push_back(static_cast<std::byte>(c));
  }
  b.directory = b.bytes.size();
  for (std::size_t i = 0; i < members.size(); ++i) {
    const Member& m = members[i];
    const std::uint64_t offset = m.offset.value_or(b.local[i]);
    b.central.push_back(b.bytes.size());
    Bytes& out = b.bytes;
    put(out, 0x02014b50, 4);
    put(out, 0x031e, 2);
    put(out, m.zip64 ? 45 : 20, 2);
    put(out, m.flags | (m.descriptor ? 8 : 0), 2);
    put(out, m.method, 2);
    put(out, 0, 2);
    put(out, 0x21, 2);
    put(out, m.crc, 4);
    put(out, m.zip64 ? ph32 : m.payload.size(), 4);
    put(out, m.zip64 ? ph32 : m.size, 4);
    put(out, m.name.size(), 2);
    put(out, m.zip64 ? 28 : 0, 2);
    put(out, 0, 2);  // comment
    put(out, 0, 2);  // disk
    put(out, 0, 2);
    put(out, 0, 4);
    put(out, m.zip64 ? ph32 : offset, 4);
    for (char c : m.name) out.push_back(static_cast<std::byte>(c));
    if (m.zip64) {
      put(out, 1, 2);
      put(out, 24, 2);
      put(out, m.size, 8);
      put(out, m.payload.size(), 8);
      put(out, offset, 8);
    }
  }
  const std::uint64_t directory_size = b.bytes.size() - b.directory;
  const std::uint64_t count = members.size();
  if (options.zip64_end) {
    b.zip64_end = b.bytes.size();
    put(b.bytes, 0x06064b50, 4);
    put(b.bytes, 44, 8);
    put(b.bytes, 0x031e, 2);
    put(b.bytes, 45, 2);
    put(b.bytes, 0, 4);
    put(b.bytes, 0, 4);
    put(b.bytes, count, 8);
    put(b.bytes, count, 8);
    put(b.bytes, directory_size, 8);
    put(b.bytes, b.directory, 8);
    put(b.bytes, 0x07064b50, 4);
    put(b.bytes, 0, 4);
    put(b.bytes, b.zip64_end, 8);
    put(b.bytes, 1, 4);
  }
  b.end = b.bytes.size();
  const bool ph = options.placeholders;
  put(b.bytes, 0x06054b50, 4);
  put(b.bytes, 0, 2);
  put(b.bytes, 0, 2);
  put(b.bytes, ph ? 0xFFFF : count, 2);
  put(b.bytes, ph ? 0xFFFF : count, 2);
  put(b.bytes, ph ? ph32 : directory_size, 4);
  put(b.bytes, ph ? ph32 : b.directory, 4);
  put(b.bytes, options.comment.size(), 2);
  for (char c : options.comment) b.bytes.push_back(static_cast<std::byte>(c));
  return b;
}

// The archive keeps a pointer to the source, so the source lives as long as the test.
struct Fixture {
  Bytes bytes;
  std::unique_ptr<Source> source;
  std::optional<Archive> archive;
  explicit Fixture(Bytes b, const Limits& limits = {}, bool single_folder = false)
      : bytes(std::move(b)), source(make_memory_source(bytes, "test.zip")) {
    archive.emplace(Archive::open(*source, limits, single_folder));
  }
  const Archive& operator*() const { return *archive; }
  const Archive* operator->() const { return &*archive; }
};

std::string streamed(const Archive& archive, const Entry& e, std::size_t* chunks = nullptr) {
  std::string out;
  archive.stream(e, [&](std::span<const std::byte> b) {
    EXPECT_LE(b.size(), std::size_t{1} << 20);
    out += text_of(b);
    if (chunks) ++*chunks;
  });
  return out;
}

// Expects `f` to throw invalid_archive with a message naming `entry` (when given) and
// holding `fragment`.
template <class F>
void expect_refused(F&& f, std::string_view entry, std::string_view fragment) {
  try {
    f();
    ADD_FAILURE() << "expected invalid_archive (" << fragment << ")";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_archive) << e.what();
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("test.zip: ", 0), 0u) << what;
    if (!entry.empty()) {
      EXPECT_NE(what.find("entry `" + std::string(entry) + "`"), std::string::npos) << what;
    }
    EXPECT_NE(what.find(fragment), std::string::npos) << what;
  }
}

void expect_open_refused(const Bytes& bytes, std::string_view entry, std::string_view fragment,
                         const Limits& limits = {}, bool single_folder = false) {
  expect_refused([&] { Fixture f(bytes, limits, single_folder); }, entry, fragment);
}

const std::string pattern = [] {
  std::string s;
  for (int i = 0; i < 100000; ++i) s += static_cast<char>('a' + (i * 7 + i / 13) % 26);
  return s;
}();

// ---- archives that open and read back ----

TEST(Zip, StoredAndDeflatedReadBack) {
  Fixture f(build({stored("a.txt", "hello"), deflated("dir/b.bin", pattern), stored("empty", ""),
                   deflated("dir/empty-deflated", "")})
                .bytes);
  ASSERT_EQ(f->entries().size(), 4u);
  EXPECT_EQ(f->entries()[0].name, "a.txt");
  EXPECT_EQ(f->entries()[1].name, "dir/b.bin");
  EXPECT_EQ(f->entries()[1].method, 8);
  EXPECT_EQ(f->entries()[1].size, pattern.size());
  EXPECT_LT(f->entries()[1].compressed_size, pattern.size());
  EXPECT_EQ(f->top_folder(), "");
  const std::vector<std::string> expected = {"hello", pattern, "", ""};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const Entry& e = f->entries()[i];
    EXPECT_EQ(text_of(f->read(e)), expected[i]) << e.name;
    EXPECT_EQ(streamed(*f, e), expected[i]) << e.name;
    ASSERT_EQ(f->find(e.name), &e);
  }
  EXPECT_EQ(f->find("missing"), nullptr);
  EXPECT_EQ(f->find("dir"), nullptr);
  EXPECT_EQ(text_of(std::span(f.bytes).subspan(f->entries()[0].data_offset, 5)), "hello");
  // A memory source is mapped: stored entries are viewed in place, deflated ones are not.
  EXPECT_EQ(text_of(f->stored_view(f->entries()[0])), "hello");
  EXPECT_TRUE(f->stored_view(f->entries()[1]).empty());
}

TEST(Zip, EmptyArchive) {
  Fixture f(build({}).bytes);
  EXPECT_TRUE(f->entries().empty());
  EXPECT_EQ(f->top_folder(), "");
}

TEST(Zip, TopFolder) {
  Fixture f(build({stored("archive/data.pkl", "x"), stored("archive/data/0", "yz"),
                   stored("archive/", "")})
                .bytes,
            {}, true);
  EXPECT_EQ(f->top_folder(), "archive");
  Fixture top_level(build({stored("a", "x"), stored("b", "y")}).bytes, {}, true);
  EXPECT_EQ(top_level->top_folder(), "");
}

TEST(Zip, Zip64Forms) {
  std::vector<Member> members = {stored("f/a", "hello"), deflated("f/b", pattern),
                                 stored("f/empty", "")};
  for (Member& m : members) m.zip64 = true;
  for (const Options& options : {Options{}, zip64_end(false), zip64_end(true)}) {
    Fixture f(build(members, options).bytes);
    ASSERT_EQ(f->entries().size(), 3u);
    EXPECT_EQ(text_of(f->read(f->entries()[0])), "hello");
    EXPECT_EQ(text_of(f->read(f->entries()[1])), pattern);
    EXPECT_EQ(streamed(*f, f->entries()[1]), pattern);
    EXPECT_EQ(f->read(f->entries()[2]).size(), 0u);
    EXPECT_EQ(f->top_folder(), "f");
  }
  // Classic members with ZIP64 end records, as torch writes them.
  Fixture f(build({stored("a", "x")}, zip64_end(false)).bytes);
  EXPECT_EQ(text_of(f->read(f->entries()[0])), "x");
}

TEST(Zip, DataDescriptors) {
  for (const bool zip64 : {false, true}) {
    for (const bool signature : {true, false}) {
      // Empty entries in the middle and at the end: their descriptors read the same with
      // 32- and 64-bit sizes.
      std::vector<Member> members = {stored("a", "hello"), stored("e", ""), deflated("b", pattern),
                                     deflated("f", ""), stored("c", "")};
      for (Member& m : members) {
        m.descriptor = true;
        m.descriptor_signature = signature;
        m.zip64 = zip64;
      }
      Fixture f(build(members).bytes);
      EXPECT_EQ(text_of(f->read(f->entries()[0])), "hello");
      EXPECT_EQ(streamed(*f, f->entries()[2]), pattern);
      for (const std::size_t empty : {1, 3, 4}) {
        EXPECT_EQ(f->read(f->entries()[empty]).size(), 0u);
      }
    }
  }
}

TEST(Zip, ArchiveComment) {
  for (const std::size_t length : {std::size_t{1}, std::size_t{100}, std::size_t{65535}}) {
    Fixture f(build({stored("a", "hello")}, with_comment(std::string(length, 'c'))).bytes);
    EXPECT_EQ(text_of(f->read(f->entries()[0])), "hello");
  }
}

TEST(Zip, StreamsInBoundedChunks) {
  std::string big;
  while (big.size() < (std::size_t{3} << 20)) big += pattern;
  Fixture f(build({stored("s", big), deflated("d", big)}).bytes);
  for (const Entry& e : f->entries()) {
    std::size_t chunks = 0;
    EXPECT_EQ(streamed(*f, e, &chunks), big);
    EXPECT_GE(chunks, 4u) << e.name;
  }
}

TEST(Zip, FilesThroughMappedAndPreadSources) {
  test::ScratchFile file("zip", build({stored("a", "hello"), deflated("b", pattern)}).bytes);
  const auto mapped = open_mmap_source(file.path());
  const auto pread = open_pread_source(file.path());
  const Archive on_map = Archive::open(*mapped);
  const Archive on_pread = Archive::open(*pread);
  EXPECT_EQ(text_of(on_map.stored_view(on_map.entries()[0])), "hello");
  EXPECT_TRUE(on_pread.stored_view(on_pread.entries()[0]).empty());
  for (const Archive* a : {&on_map, &on_pread}) {
    EXPECT_EQ(text_of(a->read(a->entries()[0])), "hello");
    EXPECT_EQ(text_of(a->read(a->entries()[1])), pattern);
    EXPECT_EQ(streamed(*a, a->entries()[1]), pattern);
  }
}

TEST(Zip, LooksLikeZip) {
  EXPECT_TRUE(looks_like_zip(bytes_of("PK\x03\x04rest")));
  EXPECT_FALSE(looks_like_zip(bytes_of("PK\x05\x06")));
  EXPECT_FALSE(looks_like_zip(bytes_of("PK\x03")));
  EXPECT_FALSE(looks_like_zip({}));
}

// ---- refusals: names and folders ----

TEST(ZipRefuses, DuplicateNames) {
  expect_open_refused(build({stored("a/x", "1"), stored("a/y", "2"), stored("a/x", "3")}).bytes,
                      "a/x", "appears twice");
}

TEST(ZipRefuses, SecondTopLevelFolder) {
  const Bytes bytes = build({stored("a/x", "1"), stored("b/y", "2")}).bytes;
  expect_open_refused(bytes, "b/y", "outside the top-level folder `a`", {}, true);
  Fixture lenient(bytes);
  EXPECT_EQ(lenient->top_folder(), "");
  expect_open_refused(build({stored("a/x", "1"), stored("y", "2")}).bytes, "y",
                      "outside the top-level folder", {}, true);
  expect_open_refused(build({stored("x", "1"), stored("a/y", "2")}).bytes, "a/y",
                      "outside the top-level folder", {}, true);
}

class ZipPathTricks : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(ZipPathTricks, Refused) {
  const std::string& name = GetParam().first;
  const std::string& fragment = GetParam().second;
  expect_refused(
      [&] {
        Fixture f(build({stored("ok", "1"), stored(name, "2")}).bytes);
      },
      name.find('\0') == std::string::npos ? name : "", fragment);
}

INSTANTIATE_TEST_SUITE_P(
    Names, ZipPathTricks,
    ::testing::Values(std::pair<std::string, std::string>{"/etc/passwd", "absolute path"},
                      std::pair<std::string, std::string>{"C:/x", "drive letter"},
                      std::pair<std::string, std::string>{"../x", "`..` path component"},
                      std::pair<std::string, std::string>{"a/../../x", "`..` path component"},
                      std::pair<std::string, std::string>{"a/..", "`..` path component"},
                      std::pair<std::string, std::string>{"./a", "`.` path component"},
                      std::pair<std::string, std::string>{"a\\b", "backslash"},
                      std::pair<std::string, std::string>{std::string("a\0b", 3), "NUL byte"},
                      std::pair<std::string, std::string>{"a//b", "empty path component"},
                      std::pair<std::string, std::string>{"", "empty name"}));

TEST(ZipRefuses, NulNameIsEscapedInTheMessage) {
  expect_open_refused(build({stored(std::string("a\0b", 3), "2")}).bytes, "a\\x00b", "NUL");
}

TEST(ZipRefuses, FolderEntryWithData) {
  expect_open_refused(build({stored("a/", "data")}).bytes, "a/", "folder entry");
}

TEST(ZipRefuses, LocalNameDiffers) {
  Member m = stored("model/data.pkl", "x");
  m.local_name = "model/data.pkX";
  expect_open_refused(build({m}).bytes, "model/data.pkl", "the local header names it");
}

// ---- refusals: flags and methods ----

TEST(ZipRefuses, EncryptedAndPatchedFlags) {
  const std::vector<std::pair<std::uint16_t, std::string>> cases = {{1u << 0, "encrypted"},
                                                                    {1u << 6, "encrypted"},
                                                                    {1u << 13, "encrypted"},
                                                                    {1u << 5, "patched"}};
  for (const auto& [bit, fragment] : cases) {
    Member both = stored("e", "x");
    both.flags = bit;
    expect_open_refused(build({both}).bytes, "e", fragment);
    expect_open_refused(build({both}).bytes, "e", "central directory");
    Member local_only = stored("e", "x");
    local_only.local_flags = bit;
    expect_open_refused(build({local_only}).bytes, "e", fragment);
    expect_open_refused(build({local_only}).bytes, "e", "local header");
  }
}

TEST(ZipRefuses, FlagsDisagree) {
  Member m = stored("e", "x");
  m.local_flags = 1u << 11;
  expect_open_refused(build({m}).bytes, "e", "flags 0x800 in the local header, 0x0");
}

TEST(ZipRefuses, UnsupportedMethod) {
  Member m = stored("e", "x");
  m.method = 12;
  expect_open_refused(build({m}).bytes, "e", "compression method 12");
}

TEST(ZipRefuses, MethodsDisagree) {
  Built b = build({deflated("e", "xxxx")});
  patch(b.bytes, b.local[0] + 8, 0, 2);
  expect_open_refused(b.bytes, "e", "method 0 in the local header, 8");
}

TEST(ZipRefuses, StoredSizesDiffer) {
  Member m = stored("e", "xyz");
  m.size = 2;
  expect_open_refused(build({m}).bytes, "e", "stored with 3 compressed bytes but 2");
}

TEST(ZipRefuses, LocalHeaderValuesDisagree) {
  struct Case {
    std::uint64_t field;
    std::string fragment;
  };
  for (const Case& c : {Case{14, "CRC-32"}, Case{18, "compressed size 4"}, Case{22, "size 4"}}) {
    Built b = build({stored("s/e", "xyz")});
    patch(b.bytes, b.local[0] + c.field, c.field == 14 ? 1 : 4, 4);
    expect_open_refused(b.bytes, "s/e", c.fragment);
  }
  // Sizes a data descriptor defers must still be zero or the true values.
  Member m = deflated("d", pattern);
  m.descriptor = true;
  Built b = build({m});
  patch(b.bytes, b.local[0] + 22, 5, 4);
  expect_open_refused(b.bytes, "d", "size 5 in the local header");
}

// ---- refusals: sizes, offsets, overlaps ----

TEST(ZipRefuses, SizesThatOverflow) {
  Member m = stored("big", "abc");
  m.zip64 = true;
  Built b = build({m});
  const std::uint64_t central_extra = b.central[0] + 46 + 3 + 4;
  const std::uint64_t local_extra = b.local[0] + 30 + 3 + 4;
  for (const std::uint64_t size : {~std::uint64_t{0} - 5, std::uint64_t{1} << 40}) {
    Bytes bytes = b.bytes;
    patch(bytes, central_extra, size, 8);
    patch(bytes, central_extra + 8, size, 8);
    patch(bytes, local_extra, size, 8);
    patch(bytes, local_extra + 8, size, 8);
    expect_open_refused(bytes, "big", size >> 63 ? "overflows 64 bits" : "runs past");
  }
}

TEST(ZipRefuses, Zip64PlaceholderWithoutField) {
  Built b = build({stored("e", "abc")});
  patch(b.bytes, b.central[0] + 20, ph32, 4);
  expect_open_refused(b.bytes, "e", "no ZIP64 field");
  Built short_field = build({[] {
    Member m = stored("e", "abc");
    m.zip64 = true;
    return m;
  }()});
  patch(short_field.bytes, short_field.central[0] + 46 + 1 + 2, 8, 2);  // 24 -> 8 bytes
  expect_open_refused(short_field.bytes, "e", "ZIP64 field is too short");
}

TEST(ZipRefuses, LocalHeaderOutsideTheEntries) {
  Member m = stored("e", "abc");
  m.offset = 1000;
  expect_open_refused(build({m}).bytes, "e", "local header offset 1000");
  Member into_directory = stored("e", "abc");
  Built b = build({into_directory});
  patch(b.bytes, b.central[0] + 42, b.directory, 4);
  expect_open_refused(b.bytes, "e", "is outside the entries' area");
}

TEST(ZipRefuses, DataRunsIntoTheDirectory) {
  Built b = build({stored("e", "abc")});
  for (const std::uint64_t at :
       {b.local[0] + 18, b.local[0] + 22, b.central[0] + 20, b.central[0] + 24}) {
    patch(b.bytes, at, 100, 4);
  }
  expect_open_refused(b.bytes, "e", "runs past the entries' area");
}

TEST(ZipRefuses, OverlappingEntries) {
  // B's local record hides inside A's stored data; B's central record points there.
  Member b = stored("b", "inner");
  const Bytes inner = local_record(b);
  Member a = stored("a", text_of(inner));
  b.write_local = false;
  b.offset = 30 + 1;  // A's data starts after its 30-byte header and 1-byte name
  expect_open_refused(build({a, b}).bytes, "b", "overlap those of entry `a`");
  // Two central records sharing one local header cannot both match its name, but two with
  // the same name pointing at one header are duplicates.
  Member c = stored("c", "x");
  Member c2 = c;
  c2.write_local = false;
  c2.offset = 0;
  expect_open_refused(build({c, c2}).bytes, "c", "appears twice");
}

TEST(ZipRefuses, BytesThatBelongToNoEntry) {
  Options prefixed;
  prefixed.prefix = "#!/bin/sh\n";
  expect_open_refused(build({stored("a", "1"), stored("b", "2")}, prefixed).bytes, "a",
                      "the bytes [0, 10) before its local header belong to no entry");
  Member a = stored("a", "1");
  a.junk_after = "hidden";
  expect_open_refused(build({a, stored("b", "2")}).bytes, "b",
                      "the bytes [32, 38) before its local header");
  expect_open_refused(build({stored("b", "2"), a}).bytes, "",
                      "the bytes [64, 70) before the central directory belong to no entry");
  Options empty_prefixed;
  empty_prefixed.prefix = "x";
  expect_open_refused(build({}, empty_prefixed).bytes, "", "[0, 1) before the central");
}

// ---- refusals: end records and central directory ----

TEST(ZipRefuses, DirectoryOffsetOrSizeOutsideTheFile) {
  Built b = build({stored("e", "abc")});
  Bytes bad_offset = b.bytes;
  patch(bad_offset, b.end + 16, b.bytes.size() + 100, 4);
  expect_open_refused(bad_offset, "", "does not end where the end records begin");
  Bytes bad_size = b.bytes;
  patch(bad_size, b.end + 12, 0xFFFFFF, 4);
  expect_open_refused(bad_size, "", "does not end where the end records begin");
  Bytes short_size = b.bytes;
  patch(short_size, b.end + 12, b.end - b.directory - 1, 4);
  patch(short_size, b.end + 16, b.directory + 1, 4);
  expect_open_refused(short_size, "", "no signature");
}

TEST(ZipRefuses, EntryCountMismatch) {
  // Long names, so that the directory could hold a third record.
  const std::string a(40, 'a'), c(40, 'c');
  Built b = build({stored(a, "1"), stored(c, "2")});
  Bytes more = b.bytes;
  patch(more, b.end + 8, 3, 2);
  patch(more, b.end + 10, 3, 2);
  expect_open_refused(more, "", "announces 3 entries, the central directory holds 2");
  Bytes fewer = b.bytes;
  patch(fewer, b.end + 8, 1, 2);
  patch(fewer, b.end + 10, 1, 2);
  expect_open_refused(fewer, "", "more than the 1 entries");
  Bytes absurd = b.bytes;
  patch(absurd, b.end + 8, 60000, 2);
  patch(absurd, b.end + 10, 60000, 2);
  expect_open_refused(absurd, "", "holds at most");
}

TEST(ZipRefuses, TooManyEntries) {
  Limits limits;
  limits.max_entries = 1;
  expect_open_refused(build({stored("a", "1"), stored("b", "2")}).bytes, "", "limit of 1", limits);
}

TEST(ZipRefuses, MultiDisk) {
  Built b = build({stored("a", "1")});
  Bytes disk = b.bytes;
  patch(disk, b.end + 4, 1, 2);
  expect_open_refused(disk, "", "multi-disk");
  Bytes split = b.bytes;
  patch(split, b.end + 8, 0, 2);
  expect_open_refused(split, "", "multi-disk");
  Bytes entry_disk = b.bytes;
  patch(entry_disk, b.central[0] + 34, 2, 2);
  expect_open_refused(entry_disk, "a", "disk 2");
  Built z = build({stored("a", "1")}, zip64_end(false));
  Bytes disks = z.bytes;
  patch(disks, z.end - 4, 3, 4);  // the locator's total number of disks
  expect_open_refused(disks, "", "multi-disk");
}

TEST(ZipRefuses, EndRecordProblems) {
  const Bytes good = build({stored("a", "1")}).bytes;
  Bytes trailing = good;
  trailing.push_back(std::byte{0});
  expect_open_refused(trailing, "", "no end of central directory record");
  expect_open_refused(Bytes(good.begin(), good.end() - 1), "", "no end of central directory");
  expect_open_refused(bytes_of("PK\x05\x06"), "", "too short");
  // A comment that carries a second end record (an empty archive) that also ends the file.
  Bytes fake;
  put(fake, 0x06054b50, 4);
  for (int i = 0; i < 8; ++i) put(fake, 0, 2);
  put(fake, 0, 2);
  Built twice = build({stored("a", "1")}, with_comment(text_of(fake)));
  expect_open_refused(twice.bytes, "", "two end of central directory records");
}

TEST(ZipRefuses, Zip64EndDisagreesWithClassic) {
  Built b = build({stored("a", "1"), stored("b", "2")}, zip64_end(false));
  Bytes count = b.bytes;
  patch(count, b.end + 10, 1, 2);
  expect_open_refused(count, "", "entry count is 1 in the end record, 2 in the ZIP64");
  Bytes moved = b.bytes;
  patch(moved, b.end - 12, b.zip64_end + 1, 8);  // the locator's record offset
  expect_open_refused(moved, "", "ZIP64 end record");
  Bytes signature = b.bytes;
  patch(signature, b.zip64_end, 0, 4);
  expect_open_refused(signature, "", "no ZIP64 end record signature");
}

TEST(ZipRefuses, DataDescriptorMismatch) {
  Member m = stored("d", "hello");
  m.descriptor = true;
  Built b = build({m});
  patch(b.bytes, b.local[0] + 30 + 1 + 5 + 4, 0xDEAD, 4);  // the descriptor's CRC
  expect_open_refused(b.bytes, "d", "data descriptor");
}

// ---- refusals when reading ----

TEST(ZipRefuses, CrcMismatchOnReadAndStream) {
  for (Member m : {stored("dir/s", "hello"), deflated("dir/d", pattern)}) {
    m.crc ^= 1;
    Fixture f(build({m}).bytes);
    const Entry& e = f->entries()[0];
    expect_refused([&] { f->read(e); }, e.name, "CRC-32 of the data is");
    expect_refused([&] { streamed(*f, e); }, e.name, "CRC-32 of the data is");
    if (m.method == 0) expect_refused([&] { f->stored_view(e); }, e.name, "CRC-32");
  }
}

// stored_view checks the CRC once per entry: a converter may come back to a storage many
// times. A copy of an entry from elsewhere is checked every time.
TEST(ZipRefuses, StoredViewChecksEachEntryOnce) {
  Fixture f(build({stored("dir/s", "hello")}).bytes);
  const Entry& e = f->entries()[0];
  EXPECT_EQ(text_of(f->stored_view(e)), "hello");
  f.bytes[static_cast<std::size_t>(e.data_offset)] = std::byte{'j'};  // after the check
  EXPECT_EQ(text_of(f->stored_view(e)), "jello");
  const Entry copy = e;
  expect_refused([&] { f->stored_view(copy); }, e.name, "CRC-32");
  Fixture fresh(f.bytes);
  expect_refused([&] { fresh->stored_view(fresh->entries()[0]); }, e.name, "CRC-32");
}

TEST(ZipRefuses, CorruptDeflateData) {
  Member m = deflated("d", pattern);
  m.payload = bytes_of(std::string(200, '\xff'));
  Fixture f(build({m}).bytes);
  expect_refused([&] { f->read(f->entries()[0]); }, "d", "corrupt deflate data");
}

TEST(ZipRefuses, DeflateStreamShorterOrLongerThanDeclared) {
  Member shorter = deflated("d", pattern);
  shorter.size += 1;
  Fixture a(build({shorter}).bytes);
  expect_refused([&] { a->read(a->entries()[0]); }, "d", "inflates to 100000 bytes");
  Member longer = deflated("d", pattern);
  longer.size -= 1;
  Fixture b(build({longer}).bytes);
  expect_refused([&] { b->read(b->entries()[0]); }, "d", "more than the 99999 bytes");
  Member truncated = deflated("d", pattern);
  truncated.payload.resize(truncated.payload.size() / 2);
  Fixture c(build({truncated}).bytes);
  expect_refused([&] { c->read(c->entries()[0]); }, "d", "ends early");
  Member trailing = deflated("d", pattern);
  trailing.payload.push_back(std::byte{0});
  Fixture d(build({trailing}).bytes);
  expect_refused([&] { d->read(d->entries()[0]); }, "d", "1 compressed bytes follow");
}

TEST(ZipRefuses, InflatedSizeCap) {
  Limits limits;
  limits.max_inflated_size = 1000;
  Fixture f(build({deflated("d", pattern), stored("s", pattern)}).bytes, limits);
  expect_refused([&] { f->read(f->entries()[0]); }, "d", "more than the limit of 1000");
  expect_refused([&] { streamed(*f, f->entries()[0]); }, "d", "more than the limit of 1000");
  EXPECT_EQ(text_of(f->read(f->entries()[1])), pattern);  // stored entries are not inflated
}

// 1 GiB of zeros deflated in a stream (the input is never held whole) to about 1 MB.
Member zero_bomb() {
  constexpr std::uint64_t total = std::uint64_t{1} << 30;
  Member m;
  m.name = "bomb/zeros";
  m.method = 8;
  m.size = total;
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_RLE), Z_OK);
  const std::vector<Bytef> zeros(std::size_t{1} << 20, 0);
  std::vector<Bytef> out(std::size_t{1} << 16);
  uLong crc = crc32_z(0, nullptr, 0);
  for (std::uint64_t fed = 0; fed <= total; fed += zeros.size()) {
    const bool last = fed == total;
    z.next_in = const_cast<Bytef*>(zeros.data());
    z.avail_in = last ? 0 : static_cast<uInt>(zeros.size());
    if (!last) crc = crc32_z(crc, zeros.data(), zeros.size());
    do {
      z.next_out = out.data();
      z.avail_out = static_cast<uInt>(out.size());
      deflate(&z, last ? Z_FINISH : Z_NO_FLUSH);
      const std::size_t got = out.size() - z.avail_out;
      for (std::size_t i = 0; i < got; ++i) m.payload.push_back(static_cast<std::byte>(out[i]));
    } while (z.avail_out == 0);
  }
  deflateEnd(&z);
  m.crc = static_cast<std::uint32_t>(crc);
  return m;
}

TEST(ZipRefuses, DeflateBomb) {
  const Member bomb = zero_bomb();
  ASSERT_LT(bomb.payload.size(), std::size_t{2} << 20);
  ASSERT_GT(bomb.size / bomb.payload.size(), 1000u);
  Fixture f(build({bomb}).bytes);
  const Entry& e = f->entries()[0];
  // Refused from the declared sizes, before a byte is inflated or allocated.
  std::uint64_t delivered = 0;
  expect_refused([&] { f->read(e); }, e.name, "a ratio above the limit of 1000");
  expect_refused(
      [&] { f->stream(e, [&](std::span<const std::byte> b) { delivered += b.size(); }); }, e.name,
      "ratio");
  EXPECT_EQ(delivered, 0u);

  // The same bomb declaring a modest size is stopped just past that size.
  Member liar = bomb;
  liar.size = std::uint64_t{10} << 20;
  Fixture g(build({liar}).bytes);
  const Entry& l = g->entries()[0];
  expect_refused(
      [&] { g->stream(l, [&](std::span<const std::byte> b) { delivered += b.size(); }); }, l.name,
      "more than the 10485760 bytes");
  EXPECT_LE(delivered, liar.size);
  expect_refused([&] { g->read(l); }, l.name, "more than the 10485760 bytes");
}

// ---- archives other tools wrote ----

class ZipFromPython : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const test::Generated generated = test::zip_fixtures("make_archives.py");
    status_ = generated.status;
    dir_ = generated.dir;
  }
  void SetUp() override {
    if (status_ == -1 && !test::have_python()) {
      GTEST_SKIP() << test::python_interpreter() << " is missing";
    }
    ASSERT_EQ(status_, 0) << "tests/fixtures/zip/make_archives.py failed";
  }

  bool missing(std::string_view module) const {
    for (const auto& row : test::read_manifest(dir_)) {
      if (row.size() == 2 && row[0] == "missing" && row[1] == module) return true;
    }
    return false;
  }

  // Opens `archive` and checks every entry against what Python's zipfile read.
  void check_against_zipfile(const std::string& archive, bool single_folder = false) {
    const auto source = open_mmap_source(dir_ / archive);
    const Archive a = Archive::open(*source, {}, single_folder);
    std::size_t rows = 0;
    for (const auto& row : test::read_manifest(dir_)) {
      if (row.size() == 3 && row[0] == "count" && row[1] == archive) {
        EXPECT_EQ(a.entries().size(), std::stoul(row[2])) << archive;
      }
      if (row.size() != 4 || row[0] != "entry" || row[1] != archive) continue;
      ++rows;
      const std::size_t index = std::stoul(row[2]);
      ASSERT_LT(index, a.entries().size());
      const Entry& e = a.entries()[index];
      EXPECT_EQ(e.name, row[3]);
      const Bytes expected = test::read_bytes(dir_ / (archive + "." + row[2] + ".bin"));
      EXPECT_EQ(a.read(e), expected) << archive << ": " << e.name;
      EXPECT_EQ(streamed(a, e), text_of(expected)) << archive << ": " << e.name;
      if (e.method == 0) {
        EXPECT_EQ(text_of(a.stored_view(e)), text_of(expected));
      }
    }
    EXPECT_GT(rows, 0u) << archive;
  }

  static inline std::filesystem::path dir_;
  static inline int status_ = -1;
};

TEST_F(ZipFromPython, Zipfile) {
  for (const char* name : {"stored.zip", "deflated.zip", "zip64_local.zip", "descriptor.zip",
                           "descriptor_stored.zip"}) {
    check_against_zipfile(name, true);
    const auto source = open_mmap_source(dir_ / name);
    EXPECT_EQ(Archive::open(*source, {}, true).top_folder(), "top") << name;
  }
}

TEST_F(ZipFromPython, ManyEntriesUseZip64EndRecords) {
  const auto source = open_pread_source(dir_ / "many.zip");
  const Archive a = Archive::open(*source, {}, true);
  ASSERT_EQ(a.entries().size(), 70000u);
  EXPECT_EQ(a.top_folder(), "many");
  EXPECT_NE(a.find("many/69999"), nullptr);
  EXPECT_TRUE(a.read(*a.find("many/12345")).empty());
}

TEST_F(ZipFromPython, TorchSave) {
  if (missing("torch")) GTEST_SKIP() << "torch is not installed for " << test::python_interpreter();
  check_against_zipfile("torch.pt", true);
  const auto source = open_mmap_source(dir_ / "torch.pt");
  const Archive a = Archive::open(*source, {}, true);
  const std::string folder = a.top_folder();
  ASSERT_FALSE(folder.empty());
  const Entry* data = a.find(folder + "/data/0");
  ASSERT_NE(data, nullptr);
  std::vector<std::int64_t> expected(10);
  for (int i = 0; i < 10; ++i) expected[i] = i;
  EXPECT_EQ(a.read(*data), test::as_bytes(expected));
  EXPECT_NE(a.find(folder + "/data.pkl"), nullptr);
}

TEST_F(ZipFromPython, NumpySavez) {
  if (missing("numpy")) GTEST_SKIP() << "numpy is not installed for " << test::python_interpreter();
  check_against_zipfile("arrays.npz");
  check_against_zipfile("compressed.npz");
}

}  // namespace
}  // namespace safetensors::detail::zip
