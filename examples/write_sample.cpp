// Writes a small model-like checkpoint with deterministic values, reopens it and checks
// every element and one slice. Exits non-zero when anything read back differs.
//
//   write_sample OUT.safetensors
#include <bit>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iostream>
#include <safetensors/safetensors.hpp>
#include <string>
#include <vector>

namespace st = safetensors;

namespace {

// A tensor to write plus the values every element must decode to.
struct Sample {
  std::string name;
  st::Dtype dtype;
  std::vector<std::uint64_t> shape;
  std::vector<std::byte> bytes;
  std::vector<double> expected;
};

template <typename T>
void append_le(std::vector<std::byte>& out, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<std::byte>((static_cast<std::uint64_t>(value) >> (8 * i)) & 0xFF));
  }
}

// Each generator returns values exactly representable in the target dtype, so the check
// below can demand equality.
Sample make_f32(std::string name, std::vector<std::uint64_t> shape,
                const std::function<float(std::uint64_t)>& value) {
  Sample s{std::move(name), st::Dtype::F32, std::move(shape), {}, {}};
  for (std::uint64_t i = 0; i < st::element_count(s.shape).value(); ++i) {
    const float v = value(i);
    append_le(s.bytes, std::bit_cast<std::uint32_t>(v));
    s.expected.push_back(v);
  }
  return s;
}

// bfloat16 is the upper half of a float; the values used have at most 8 significant bits.
Sample make_bf16(std::string name, std::vector<std::uint64_t> shape,
                 const std::function<float(std::uint64_t)>& value) {
  Sample s{std::move(name), st::Dtype::BF16, std::move(shape), {}, {}};
  for (std::uint64_t i = 0; i < st::element_count(s.shape).value(); ++i) {
    const float v = value(i);
    append_le(s.bytes, static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(v) >> 16));
    s.expected.push_back(v);
  }
  return s;
}

// IEEE half for normal values with at most 11 significant bits (and zero).
std::uint16_t to_half(float v) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(v);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  if ((bits & 0x7FFFFFFFu) == 0) return static_cast<std::uint16_t>(sign);
  const std::uint32_t exponent = ((bits >> 23) & 0xFFu) - 127 + 15;
  const std::uint32_t mantissa = (bits >> 13) & 0x3FFu;
  return static_cast<std::uint16_t>(sign | (exponent << 10) | mantissa);
}

Sample make_f16(std::string name, std::vector<std::uint64_t> shape,
                const std::function<float(std::uint64_t)>& value) {
  Sample s{std::move(name), st::Dtype::F16, std::move(shape), {}, {}};
  for (std::uint64_t i = 0; i < st::element_count(s.shape).value(); ++i) {
    const float v = value(i);
    append_le(s.bytes, to_half(v));
    s.expected.push_back(v);
  }
  return s;
}

template <typename T>
Sample make_int(std::string name, st::Dtype dtype, std::vector<std::uint64_t> shape,
                const std::function<T(std::uint64_t)>& value) {
  Sample s{std::move(name), dtype, std::move(shape), {}, {}};
  for (std::uint64_t i = 0; i < st::element_count(s.shape).value(); ++i) {
    const T v = value(i);
    append_le(s.bytes, v);
    s.expected.push_back(static_cast<double>(v));
  }
  return s;
}

std::vector<Sample> make_samples() {
  std::vector<Sample> samples;
  samples.push_back(make_f32("model.embed_tokens.weight", {16, 8}, [](std::uint64_t i) {
    return static_cast<float>(static_cast<int>(i % 29) - 14) * 0.125f;
  }));
  samples.push_back(
      make_bf16("model.layers.0.self_attn.q_proj.weight", {8, 8}, [](std::uint64_t i) {
        return static_cast<float>(static_cast<int>(i * 7 % 33) - 16) / 64.0f;
      }));
  samples.push_back(make_f16("model.layers.0.mlp.up_proj.weight", {8, 4}, [](std::uint64_t i) {
    return static_cast<float>(static_cast<int>(i * 5 % 41) - 20) / 256.0f;
  }));
  samples.push_back(
      make_int<std::int64_t>("input_ids", st::Dtype::I64, {2, 6}, [](std::uint64_t i) {
        return static_cast<std::int64_t>(i * 1009 % 32000) - (i == 11 ? 1 : 0);
      }));
  samples.push_back(make_int<std::uint8_t>(
      "quantized.codes", st::Dtype::U8, {12},
      [](std::uint64_t i) { return static_cast<std::uint8_t>(i * 37 % 256); }));
  samples.push_back(make_int<std::uint8_t>(
      "attention_mask", st::Dtype::BOOL, {2, 6},
      [](std::uint64_t i) { return static_cast<std::uint8_t>(i % 6 < 4 ? 1 : 0); }));
  samples.push_back(make_f32("model.norm.eps", {}, [](std::uint64_t) { return 0.0009765625f; }));
  return samples;
}

std::string shape_text(const std::vector<std::uint64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// Prints the tensor's first elements and returns the number of elements that differ.
std::size_t check_tensor(const st::File& file, const Sample& sample) {
  const st::TensorInfo& info = file.info(sample.name);
  std::vector<std::byte> data = file.read(sample.name);
  std::cout << "  " << info.name << "  " << st::dtype_name(info.dtype) << " "
            << shape_text(info.shape) << "  [";
  const std::uint64_t count = info.element_count();
  for (std::uint64_t i = 0; i < count && i < 6; ++i) {
    std::cout << (i ? ", " : "") << st::format_element(info.dtype, data, i);
  }
  std::cout << (count > 6 ? ", ...]" : "]") << "\n";

  std::size_t bad = 0;
  if (info.dtype != sample.dtype || info.shape != sample.shape || data != sample.bytes) ++bad;
  for (std::uint64_t i = 0; i < count && i < sample.expected.size(); ++i) {
    if (st::element_as_double(info.dtype, data, i) != sample.expected[i]) ++bad;
  }
  if (bad != 0) std::cerr << "MISMATCH in " << sample.name << "\n";
  return bad;
}

// embed_tokens[2:5, ::3]: a strided slice, so it is copied rather than viewed.
std::size_t check_slice(const st::File& file, const Sample& embed) {
  const std::vector<st::SliceArg> args = {st::SliceArg::range(2, 5),
                                          st::SliceArg::range({}, {}, 3)};
  const st::SlicedTensor slice = file.slice(embed.name, args);
  std::cout << "  " << embed.name << "[2:5, ::3] -> " << shape_text(slice.shape()) << " [";
  std::size_t bad = slice.shape() == std::vector<std::uint64_t>{3, 3} ? 0 : 1;
  std::uint64_t k = 0;
  for (std::uint64_t row = 2; row < 5; ++row) {
    for (std::uint64_t col = 0; col < 8; col += 3, ++k) {
      const double got = st::element_as_double(slice.dtype(), slice.bytes(), k);
      std::cout << (k ? ", " : "") << got;
      if (got != embed.expected[row * 8 + col]) ++bad;
    }
  }
  std::cout << "]\n";
  if (bad != 0) std::cerr << "MISMATCH in the slice of " << embed.name << "\n";
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: write_sample OUT.safetensors\n";
    return 2;
  }
  try {
    const std::vector<Sample> samples = make_samples();
    std::vector<st::TensorData> tensors;
    for (const Sample& s : samples) {
      tensors.push_back(st::TensorData::from_bytes(s.name, s.dtype, s.shape, s.bytes));
    }
    st::WriteOptions options;
    options.metadata = st::Metadata{{"format", "pt"}};
    st::write_file(argv[1], tensors, options);

    const st::File file = st::File::open(argv[1]);
    std::cout << "wrote " << argv[1] << ": " << file.size() << " tensors, "
              << file.header().data_size << " data bytes, header ends at "
              << file.header().data_start << "\n";
    std::size_t bad = 0;
    if (file.size() != samples.size() || !file.metadata() || file.metadata()->size() != 1 ||
        file.metadata()->at("format") != "pt") {
      std::cerr << "MISMATCH in tensor count or metadata\n";
      ++bad;
    }
    for (const Sample& s : samples) bad += check_tensor(file, s);
    bad += check_slice(file, samples.front());
    if (bad != 0) {
      std::cerr << "write_sample: " << bad << " values differ\n";
      return 1;
    }
    std::cout << "all values read back match\n";
    return 0;
  } catch (const st::Error& e) {
    std::cerr << "write_sample: " << st::error_code_name(e.code()) << ": " << e.what() << "\n";
    return 1;
  }
}
