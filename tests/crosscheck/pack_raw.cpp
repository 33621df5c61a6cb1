// pack_raw: writes a safetensors file from raw little-endian tensor files with write_file,
// so crosscheck.py can compare our output with an independent Python implementation.
//
//   pack_raw OUT [--metadata K=V]... [--empty-metadata] [--align N] NAME:DTYPE:DIMS:RAWFILE...
//
// DIMS is d0xd1x... (empty for a scalar). NAME may itself contain ':'; the last three
// fields are split off from the right.
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "safetensors/dtype.hpp"
#include "safetensors/error.hpp"
#include "safetensors/writer.hpp"

namespace {

struct Spec {
  std::string name;
  safetensors::Dtype dtype;
  std::vector<std::uint64_t> shape;
  std::vector<std::byte> bytes;
};

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "pack_raw: " << message << "\n";
  std::exit(2);
}

std::vector<std::byte> read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open " + path);
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const auto bytes = std::as_bytes(std::span(text));
  return {bytes.begin(), bytes.end()};
}

std::vector<std::uint64_t> parse_dims(std::string_view dims, std::string_view arg) {
  std::vector<std::uint64_t> shape;
  if (dims.empty()) return shape;
  std::size_t start = 0;
  while (true) {
    const std::size_t x = dims.find('x', start);
    const std::string dim(dims.substr(start, x == std::string_view::npos ? x : x - start));
    if (dim.empty() || dim.find_first_not_of("0123456789") != std::string::npos) {
      fail("bad dimension '" + dim + "' in " + std::string(arg));
    }
    shape.push_back(std::stoull(dim));
    if (x == std::string_view::npos) return shape;
    start = x + 1;
  }
}

Spec parse_spec(std::string_view arg) {
  const std::size_t file_colon = arg.rfind(':');
  const std::size_t dims_colon =
      file_colon == std::string_view::npos ? file_colon : arg.rfind(':', file_colon - 1);
  const std::size_t dtype_colon = dims_colon == std::string_view::npos || dims_colon == 0
                                      ? std::string_view::npos
                                      : arg.rfind(':', dims_colon - 1);
  if (file_colon == std::string_view::npos || dims_colon == std::string_view::npos ||
      dtype_colon == std::string_view::npos) {
    fail("expected NAME:DTYPE:DIMS:RAWFILE, got " + std::string(arg));
  }
  const std::string_view dtype_text = arg.substr(dtype_colon + 1, dims_colon - dtype_colon - 1);
  const auto dtype = safetensors::dtype_from_name(dtype_text);
  if (!dtype) fail("unknown dtype " + std::string(dtype_text));
  return {std::string(arg.substr(0, dtype_colon)), *dtype,
          parse_dims(arg.substr(dims_colon + 1, file_colon - dims_colon - 1), arg),
          read_raw(std::string(arg.substr(file_colon + 1)))};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) fail("usage: pack_raw OUT [--metadata K=V]... [--align N] NAME:DTYPE:DIMS:RAW...");
  const std::string out = argv[1];
  safetensors::WriteOptions options;
  std::vector<Spec> specs;
  for (int i = 2; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--metadata" && i + 1 < argc) {
      const std::string_view kv = argv[++i];
      const std::size_t eq = kv.find('=');
      if (eq == std::string_view::npos) fail("expected K=V after --metadata");
      if (!options.metadata) options.metadata.emplace();
      (*options.metadata)[std::string(kv.substr(0, eq))] = std::string(kv.substr(eq + 1));
    } else if (arg == "--empty-metadata") {
      if (!options.metadata) options.metadata.emplace();
    } else if (arg == "--align" && i + 1 < argc) {
      options.alignment = std::stoull(argv[++i]);
    } else {
      specs.push_back(parse_spec(arg));
    }
  }
  std::vector<safetensors::TensorData> tensors;
  tensors.reserve(specs.size());
  for (const Spec& s : specs) {
    tensors.push_back(safetensors::TensorData::from_bytes(s.name, s.dtype, s.shape, s.bytes));
  }
  try {
    safetensors::write_file(out, tensors, options);
  } catch (const safetensors::Error& e) {
    std::cerr << "pack_raw: " << safetensors::error_code_name(e.code()) << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}
