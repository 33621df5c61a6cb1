#include "safetensors/cast.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

// The element functions behind `cast`, compiled here without the AVX2 target: checking them
// against torch covers the portable path even on a machine where `cast` picks AVX2.
#include "../../src/loader/cast_kernels.hpp"
#include "python_fixtures.hpp"
#include "safetensors/error.hpp"
#include "safetensors/values.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

namespace fs = std::filesystem;

// The major version of the oracle's torch, read by TorchReference.
int torch_major = 2;

// Converts the raw inputs the test wrote with torch's `.to(dtype)` and writes raw outputs.
// Exit status 3: torch or numpy is missing.
constexpr const char* reference_script = R"PY(
import sys
try:
    import numpy as np
    import torch
except ImportError:
    sys.exit(3)
d = sys.argv[1]
open(d + "/torch_major", "w").write(torch.__version__.split(".")[0])
def load(name, dtype, view):
    a = np.fromfile(d + "/" + name, dtype=dtype)
    return torch.from_numpy(a).view(view)
def save(t, name):
    t = t.contiguous()
    t.view(torch.int16 if t.element_size() == 2 else torch.int32).numpy().tofile(d + "/" + name)
f16 = load("f16.in", np.int16, torch.float16)
bf16 = load("bf16.in", np.int16, torch.bfloat16)
f32 = load("f32.in", np.int32, torch.float32)
save(f16.to(torch.float32), "f16.f32")
save(f16.to(torch.bfloat16), "f16.bf16")
save(f16.to(torch.float32).to(torch.float16), "f16.f32.f16")
save(bf16.to(torch.float32), "bf16.f32")
save(bf16.to(torch.float16), "bf16.f16")
save(bf16.to(torch.float32).to(torch.bfloat16), "bf16.f32.bf16")
save(f32.to(torch.bfloat16), "f32.bf16")
save(f32.to(torch.float16), "f32.f16")
)PY";

template <class T>
void write_raw(const fs::path& path, const std::vector<T>& values) {
  test::write_file(path, std::as_bytes(std::span<const T>(values)));
}

template <class T>
std::vector<T> read_raw(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<T> out(chars.size() / sizeof(T));
  std::memcpy(out.data(), chars.data(), out.size() * sizeof(T));
  return out;
}

// F32 codes where conversions are easy to get wrong, then a large sample: random bit
// patterns (NaN payloads included) and random values in and around the F16 range.
std::vector<std::uint32_t> f32_inputs() {
  std::vector<std::uint32_t> codes = {
      0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000,  // zero, subnormal
      0x7F800000, 0xFF800000, 0x7F7FFFFF, 0xFF7FFFFF,                          // inf, max
      0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FFFFFFF,  // NaNs
      0x7FA12345, 0xFFFFFFFF, 0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001,  // F16 max, ties
      0x47800000, 0x33000000, 0x33000001, 0x33800000, 0x33C00000, 0x387FC000,  // F16 subnormal
      0x387FE000, 0x387FF000, 0x38800000, 0x3F808000, 0x3F818000, 0x3F800001,  // ties
      0x3F801000, 0x3F803000, 0x3F802000, 0x3F807FFF, 0x3F808001, 0x7F7F8000,
  };
  std::mt19937 random(20240611);
  for (int i = 0; i < 1'000'000; ++i) codes.push_back(random());
  for (int i = 0; i < 1'000'000; ++i) {
    const std::uint32_t exponent = 95 + random() % 50;  // 2^-32 .. 2^17
    codes.push_back((random() & 0x807FFFFFu) | (exponent << 23));
  }
  for (int i = 0; i < 200'000; ++i) {
    // Exact ties and their neighbours for both narrow formats.
    const std::uint32_t exponent = 95 + random() % 50;
    const std::uint32_t base = (random() & 0x807FFFFFu) | (exponent << 23);
    for (std::uint32_t tie : {(base & ~0xFFFFu) | 0x8000u, (base & ~0x1FFFu) | 0x1000u}) {
      codes.push_back(tie);
      codes.push_back(tie + 1);
      codes.push_back(tie - 1);
    }
  }
  return codes;
}

std::vector<std::uint16_t> all_codes16() {
  std::vector<std::uint16_t> codes(65536);
  for (std::uint32_t i = 0; i < 65536; ++i) codes[i] = static_cast<std::uint16_t>(i);
  return codes;
}

template <class Out, class In>
std::vector<Out> cast_all(Dtype from, const std::vector<In>& in, Dtype to) {
  std::vector<Out> out(in.size());
  cast(from, std::as_bytes(std::span<const In>(in)), to, std::as_writable_bytes(std::span(out)));
  return out;
}

template <class Out, class In, class Fn>
std::vector<Out> map_all(const std::vector<In>& in, Fn fn) {
  std::vector<Out> out(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) out[i] = fn(in[i]);
  return out;
}

// torch 1.13 turns every NaN it narrows to F16 into the canonical 0x7E00 (with the sign);
// torch 2, which we follow, keeps the top of the payload. Against torch 1 the F16 results are
// compared with every NaN made canonical on both sides.
void canonicalize_f16_nans(std::vector<std::uint16_t>& bits) {
  for (auto& b : bits) {
    if ((b & 0x7FFFu) > 0x7C00u) b = static_cast<std::uint16_t>((b & 0x8000u) | 0x7E00u);
  }
}

// Counts mismatches and reports the first few, so a broken kernel does not print millions.
template <class In, class Out>
void expect_bits(const std::vector<In>& in, std::vector<Out> expected, std::vector<Out> actual,
                 const std::string& what) {
  if constexpr (sizeof(Out) == 2) {
    if (torch_major < 2 && what.ends_with("F16")) {
      canonicalize_f16_nans(expected);
      canonicalize_f16_nans(actual);
    }
  }
  ASSERT_EQ(expected.size(), in.size()) << what << ": reference has the wrong length";
  ASSERT_EQ(actual.size(), in.size()) << what;
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (expected[i] == actual[i]) continue;
    if (++wrong <= 5) {
      ADD_FAILURE() << what << ": input 0x" << std::hex << +in[i] << " gave 0x" << +actual[i]
                    << ", torch gives 0x" << +expected[i];
    }
  }
  EXPECT_EQ(wrong, 0u) << what;
}

class TorchReference : public ::testing::Test {
 protected:
  // The interpreter whose torch is the oracle: SAFETENSORS_TORCH_PYTHON (the test venv's,
  // set by CMake when it exists) or the configured one.
  static std::string oracle_python() {
    const char* chosen = std::getenv("SAFETENSORS_TORCH_PYTHON");
    return chosen != nullptr && *chosen != '\0' ? chosen : test::python_interpreter();
  }
  static void SetUpTestSuite() {
    dir_ = test::scratch_dir() / ("cast-torch-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    f32_ = f32_inputs();
    write_raw(dir_ / "f16.in", all_codes16());
    write_raw(dir_ / "bf16.in", all_codes16());
    write_raw(dir_ / "f32.in", f32_);
    std::ofstream(dir_ / "reference.py") << reference_script;
    const std::string runs = test::shell_quote(oracle_python()) + " -c '' >/dev/null 2>&1";
    if (std::system(runs.c_str()) != 0) return;
    // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) about "'" + std::string.
    std::string command(1, '\'');
    command.append(oracle_python()).append("' '");
    command.append((dir_ / "reference.py").string()).append("' '").append(dir_.string()) += '\'';
    const int raw = std::system(command.c_str());
    if (raw != -1 && WIFEXITED(raw)) status_ = WEXITSTATUS(raw);
    if (status_ == 0) std::ifstream(dir_ / "torch_major") >> torch_major;
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  void SetUp() override {
    if (status_ == 3) GTEST_SKIP() << oracle_python() << " has no torch or numpy";
    if (status_ == -1) GTEST_SKIP() << oracle_python() << " could not run";
    ASSERT_EQ(status_, 0) << "the torch reference script failed";
  }
  template <class T>
  static std::vector<T> reference(const std::string& name) {
    return read_raw<T>(dir_ / name);
  }

  static inline fs::path dir_;
  static inline std::vector<std::uint32_t> f32_;
  static inline int status_ = -1;
};

TEST_F(TorchReference, EveryF16Code) {
  const auto in = all_codes16();
  const auto to_f32 = reference<std::uint32_t>("f16.f32");
  const auto to_bf16 = reference<std::uint16_t>("f16.bf16");
  expect_bits(in, to_f32, cast_all<std::uint32_t>(Dtype::F16, in, Dtype::F32), "F16->F32");
  expect_bits(in, to_bf16, cast_all<std::uint16_t>(Dtype::F16, in, Dtype::BF16), "F16->BF16");
  expect_bits(in, to_f32, map_all<std::uint32_t>(in, detail::f16_to_f32), "portable F16->F32");
  expect_bits(in, to_bf16, map_all<std::uint16_t>(in, detail::f16_to_bf16), "portable F16->BF16");
}

TEST_F(TorchReference, EveryF16CodeRoundTripsThroughF32) {
  const auto in = all_codes16();
  const auto wide = cast_all<std::uint32_t>(Dtype::F16, in, Dtype::F32);
  expect_bits(in, reference<std::uint16_t>("f16.f32.f16"),
              cast_all<std::uint16_t>(Dtype::F32, wide, Dtype::F16), "F16->F32->F16");
}

TEST_F(TorchReference, EveryBf16Code) {
  const auto in = all_codes16();
  const auto to_f32 = reference<std::uint32_t>("bf16.f32");
  const auto to_f16 = reference<std::uint16_t>("bf16.f16");
  expect_bits(in, to_f32, cast_all<std::uint32_t>(Dtype::BF16, in, Dtype::F32), "BF16->F32");
  expect_bits(in, to_f16, cast_all<std::uint16_t>(Dtype::BF16, in, Dtype::F16), "BF16->F16");
  expect_bits(in, to_f32, map_all<std::uint32_t>(in, detail::bf16_to_f32), "portable BF16->F32");
  expect_bits(in, to_f16, map_all<std::uint16_t>(in, detail::bf16_to_f16), "portable BF16->F16");
}

TEST_F(TorchReference, EveryBf16CodeRoundTripsThroughF32) {
  const auto in = all_codes16();
  const auto wide = cast_all<std::uint32_t>(Dtype::BF16, in, Dtype::F32);
  expect_bits(in, reference<std::uint16_t>("bf16.f32.bf16"),
              cast_all<std::uint16_t>(Dtype::F32, wide, Dtype::BF16), "BF16->F32->BF16");
}

TEST_F(TorchReference, F32EdgeCasesAndSample) {
  const auto to_bf16 = reference<std::uint16_t>("f32.bf16");
  const auto to_f16 = reference<std::uint16_t>("f32.f16");
  expect_bits(f32_, to_bf16, cast_all<std::uint16_t>(Dtype::F32, f32_, Dtype::BF16), "F32->BF16");
  expect_bits(f32_, to_f16, cast_all<std::uint16_t>(Dtype::F32, f32_, Dtype::F16), "F32->F16");
  expect_bits(f32_, to_bf16, map_all<std::uint16_t>(f32_, detail::f32_to_bf16),
              "portable F32->BF16");
  expect_bits(f32_, to_f16, map_all<std::uint16_t>(f32_, detail::f32_to_f16), "portable F32->F16");
}

// Vector bodies and scalar tails must agree: every length and misalignment of a window gives
// the same bits as the whole-array conversion.
TEST(Cast, WindowsAtAnyOffsetMatchTheWholeArray) {
  std::vector<std::uint32_t> in(300);
  std::mt19937 random(7);
  for (auto& v : in) v = random();
  const auto whole = cast_all<std::uint16_t>(Dtype::F32, in, Dtype::BF16);
  const auto in_bytes = std::as_bytes(std::span<const std::uint32_t>(in));
  std::vector<std::byte> out(2 * in.size() + 1);
  for (std::size_t begin = 0; begin < 40; ++begin) {
    for (std::size_t count = 0; count < 100; ++count) {
      // A one-byte shift of the output breaks every alignment assumption.
      const auto window = std::span(out).subspan(1, 2 * count);
      cast(Dtype::F32, in_bytes.subspan(4 * begin, 4 * count), Dtype::BF16, window);
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t got;
        std::memcpy(&got, window.data() + 2 * i, 2);
        ASSERT_EQ(got, whole[begin + i]) << "begin " << begin << " count " << count;
      }
    }
  }
}

// The F8 formats widen exactly (E8M0 into F16 aside, rounded as from F32): every code
// matches values.hpp's decoder in every target.
void expect_f8_table(Dtype from) {
  std::vector<std::uint8_t> codes(256);
  for (unsigned i = 0; i < 256; ++i) codes[i] = static_cast<std::uint8_t>(i);
  const auto f32 = cast_all<std::uint32_t>(from, codes, Dtype::F32);
  const auto f16 = cast_all<std::uint16_t>(from, codes, Dtype::F16);
  const auto bf16 = cast_all<std::uint16_t>(from, codes, Dtype::BF16);
  for (unsigned code = 0; code < 256; ++code) {
    const float expected = f8_to_float(from, static_cast<std::uint8_t>(code));
    const float values[] = {std::bit_cast<float>(f32[code]), f16_to_float(f16[code]),
                            bf16_to_float(bf16[code])};
    // The sign is read from the bits: the decoders need not keep the sign of a NaN. A NaN
    // in BF16 loses its sign as in torch (F8NaNBitsAreTorchs checks the bits); E8M0 and the
    // FNUZ formats have one NaN, without a sign.
    const bool signs[] = {(f32[code] >> 31) != 0, (f16[code] >> 15) != 0, (bf16[code] >> 15) != 0};
    const bool signed_nans = from == Dtype::F8_E4M3 || from == Dtype::F8_E5M2;
    for (int i = 0; i < 3; ++i) {
      bool sign = std::signbit(expected);
      if (std::isnan(expected)) {
        EXPECT_TRUE(std::isnan(values[i])) << dtype_name(from) << " code " << code;
        if (i == 2) continue;
        sign = signed_nans && (code & 0x80) != 0;
      } else if (from == Dtype::F8_E8M0 && i == 1) {
        const float rounded =
            f16_to_float(detail::f32_to_f16(std::bit_cast<std::uint32_t>(expected)));
        EXPECT_EQ(values[i], rounded) << dtype_name(from) << " code " << code;
      } else {
        EXPECT_EQ(values[i], expected) << dtype_name(from) << " code " << code;
      }
      EXPECT_EQ(signs[i], sign) << dtype_name(from) << " code " << code;
    }
  }
}

TEST(Cast, F8E4M3WidensExactly) {
  expect_f8_table(Dtype::F8_E4M3);
}
TEST(Cast, F8E5M2WidensExactly) {
  expect_f8_table(Dtype::F8_E5M2);
}
TEST(Cast, F8E8M0Widens) {
  expect_f8_table(Dtype::F8_E8M0);
}
TEST(Cast, F8FnuzWidenExactly) {
  expect_f8_table(Dtype::F8_E4M3FNUZ);
  expect_f8_table(Dtype::F8_E5M2FNUZ);
}

// E8M0's powers of two at the ends of each target's range, and the one NaN of E8M0 and of
// the FNUZ formats, as torch 2.13's `.to()` gives them.
TEST(Cast, F8E8M0AndFnuzBitsAreTorchs) {
  const std::vector<std::uint8_t> e8m0 = {0x00, 0x01, 0x66, 0x67, 0x70,
                                          0x7F, 0x8E, 0x8F, 0xFE, 0xFF};
  EXPECT_EQ(
      cast_all<std::uint32_t>(Dtype::F8_E8M0, e8m0, Dtype::F32),
      (std::vector<std::uint32_t>{0x00400000, 0x00800000, 0x33000000, 0x33800000, 0x38000000,
                                  0x3F800000, 0x47000000, 0x47800000, 0x7F000000, 0x7F800001}));
  // 2^-25 ties to zero, 2^-24 is F16's smallest subnormal, 2^16 overflows.
  EXPECT_EQ(cast_all<std::uint16_t>(Dtype::F8_E8M0, e8m0, Dtype::F16),
            (std::vector<std::uint16_t>{0x0000, 0x0000, 0x0000, 0x0001, 0x0200, 0x3C00, 0x7800,
                                        0x7C00, 0x7C00, 0x7E00}));
  EXPECT_EQ(cast_all<std::uint16_t>(Dtype::F8_E8M0, e8m0, Dtype::BF16),
            (std::vector<std::uint16_t>{0x0040, 0x0080, 0x3300, 0x3380, 0x3800, 0x3F80, 0x4700,
                                        0x4780, 0x7F00, 0x7FC0}));
  for (Dtype fnuz : {Dtype::F8_E4M3FNUZ, Dtype::F8_E5M2FNUZ}) {
    const std::vector<std::uint8_t> codes = {0x00, 0x80};
    EXPECT_EQ(cast_all<std::uint32_t>(fnuz, codes, Dtype::F32),
              (std::vector<std::uint32_t>{0x00000000, 0x7F800001}));
    EXPECT_EQ(cast_all<std::uint16_t>(fnuz, codes, Dtype::F16),
              (std::vector<std::uint16_t>{0x0000, 0x7E00}));
    EXPECT_EQ(cast_all<std::uint16_t>(fnuz, codes, Dtype::BF16),
              (std::vector<std::uint16_t>{0x0000, 0x7FC0}));
  }
}

TEST(Cast, F8InfinityAndNaN) {
  const std::vector<std::uint8_t> codes = {0x7C, 0xFC, 0x7D, 0x7F};  // E5M2: +inf -inf NaN NaN
  const auto f32 = cast_all<std::uint32_t>(Dtype::F8_E5M2, codes, Dtype::F32);
  EXPECT_EQ(f32[0], 0x7F800000u);
  EXPECT_EQ(f32[1], 0xFF800000u);
  EXPECT_TRUE(std::isnan(std::bit_cast<float>(f32[2])));
  const auto e4m3 =
      cast_all<std::uint16_t>(Dtype::F8_E4M3, std::vector<std::uint8_t>{0x7E, 0x7F}, Dtype::F16);
  EXPECT_EQ(f16_to_float(e4m3[0]), 448.0f);  // E4M3FN has no infinity: 0x7E is its max
  EXPECT_TRUE(std::isnan(f16_to_float(e4m3[1])));
}

// The NaN bits of torch 2's scalar float8 conversions (c10's Float8 types: E5M2 through its
// F16 bits and a float multiply, E4M3FN by integer decoding; BFloat16(float) gives 0x7FC0).
TEST(Cast, F8NaNBitsAreTorchs) {
  const std::vector<std::uint8_t> e5m2 = {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF};
  EXPECT_EQ(cast_all<std::uint32_t>(Dtype::F8_E5M2, e5m2, Dtype::F32),
            (std::vector<std::uint32_t>{0x7FE00000, 0x7FC00000, 0x7FE00000, 0xFFE00000, 0xFFC00000,
                                        0xFFE00000}));
  EXPECT_EQ(cast_all<std::uint16_t>(Dtype::F8_E5M2, e5m2, Dtype::F16),
            (std::vector<std::uint16_t>{0x7F00, 0x7E00, 0x7F00, 0xFF00, 0xFE00, 0xFF00}));
  EXPECT_EQ(cast_all<std::uint16_t>(Dtype::F8_E5M2, e5m2, Dtype::BF16),
            std::vector<std::uint16_t>(6, 0x7FC0));
  const std::vector<std::uint8_t> e4m3 = {0x7F, 0xFF};
  EXPECT_EQ(cast_all<std::uint32_t>(Dtype::F8_E4M3, e4m3, Dtype::F32),
            (std::vector<std::uint32_t>{0x7FF00000, 0xFFF00000}));
  EXPECT_EQ(cast_all<std::uint16_t>(Dtype::F8_E4M3, e4m3, Dtype::F16),
            (std::vector<std::uint16_t>{0x7F80, 0xFF80}));
  EXPECT_EQ(cast_all<std::uint16_t>(Dtype::F8_E4M3, e4m3, Dtype::BF16),
            (std::vector<std::uint16_t>{0x7FC0, 0x7FC0}));
}

TEST(Cast, IdentityCopiesEveryDtype) {
  std::vector<std::byte> in(48);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::byte>(i * 37);
  for (Dtype dtype : all_dtypes()) {
    EXPECT_TRUE(can_cast(dtype, dtype)) << dtype_name(dtype);
    std::vector<std::byte> out(in.size());
    cast(dtype, in, dtype, out);
    EXPECT_EQ(out, in) << dtype_name(dtype);
  }
}

TEST(Cast, SupportedPairs) {
  const Dtype wide[] = {Dtype::F32, Dtype::F16, Dtype::BF16};
  for (Dtype to : wide) {
    for (Dtype from : wide) EXPECT_TRUE(can_cast(from, to));
    EXPECT_TRUE(can_cast(Dtype::F8_E4M3, to));
    EXPECT_TRUE(can_cast(Dtype::F8_E5M2, to));
    EXPECT_FALSE(can_cast(to, Dtype::F8_E4M3));
    EXPECT_FALSE(can_cast(Dtype::F64, to));
    EXPECT_FALSE(can_cast(Dtype::I32, to));
    EXPECT_FALSE(can_cast(to, Dtype::F64));
    EXPECT_TRUE(can_cast(Dtype::F8_E8M0, to));
    EXPECT_TRUE(can_cast(Dtype::F8_E4M3FNUZ, to));
    EXPECT_TRUE(can_cast(Dtype::F8_E5M2FNUZ, to));
    EXPECT_FALSE(can_cast(to, Dtype::F8_E8M0));
    EXPECT_FALSE(can_cast(Dtype::F4, to));  // not yet
    EXPECT_FALSE(can_cast(Dtype::F6_E3M2, to));
  }
  EXPECT_FALSE(can_cast(Dtype::F8_E4M3, Dtype::F8_E5M2));
  EXPECT_FALSE(can_cast(Dtype::I8, Dtype::U8));
}

void expect_invalid(Dtype from, std::size_t in_bytes, Dtype to, std::size_t out_bytes,
                    const std::string& needle) {
  std::vector<std::byte> in(in_bytes), out(out_bytes);
  try {
    cast(from, in, to, out);
    ADD_FAILURE() << "no error for " << dtype_name(from) << " -> " << dtype_name(to);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Cast, RejectsUnsupportedPairsAndSizeMismatches) {
  expect_invalid(Dtype::F64, 8, Dtype::F32, 4, "unsupported");
  expect_invalid(Dtype::F32, 4, Dtype::I32, 4, "unsupported");
  expect_invalid(Dtype::BF16, 2, Dtype::F8_E4M3, 1, "F8_E4M3");
  expect_invalid(Dtype::F32, 6, Dtype::BF16, 3, "whole number");
  expect_invalid(Dtype::F32, 8, Dtype::BF16, 6, "exactly 2 elements");
  expect_invalid(Dtype::F8_E5M2, 3, Dtype::F32, 8, "exactly 3 elements");
  expect_invalid(Dtype::F16, 4, Dtype::F16, 2, "sizes differ");
  expect_invalid(Dtype::F16, 3, Dtype::F32, 6, "whole number");
}

}  // namespace
}  // namespace safetensors
