// Benchmarks of header parsing, opening, bulk reads and writes, each beside the reference
// that bounds it (memcpy of the same bytes for reads and writes). Scratch files go to
// SAFETENSORS_BENCH_DATA (overridable with the environment variable of the same name).
#include <benchmark/benchmark.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <safetensors/safetensors.hpp>
#include <string>
#include <vector>

namespace st = safetensors;
namespace fs = std::filesystem;

namespace {

fs::path data_dir() {
  const char* env = std::getenv("SAFETENSORS_BENCH_DATA");
  fs::path dir = env != nullptr && *env != '\0' ? fs::path(env) : fs::path(SAFETENSORS_BENCH_DATA);
  fs::create_directories(dir);
  return dir;
}

void fill_pattern(std::uint64_t offset, std::span<std::byte> out) {
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>((offset + i) * 131 >> 3);
  }
}

// A GPT-style decoder: per layer eight 2-d weights, F32 and BF16 alternating by layer.
// `divisor` shrinks every dimension so that files with many tensors stay small on disk.
std::vector<st::TensorData> decoder_layout(std::size_t count, std::uint64_t divisor) {
  struct Weight {
    const char* suffix;
    std::uint64_t rows, cols;
  };
  static constexpr std::array<Weight, 8> weights = {{
      {"self_attn.q_proj.weight", 4096, 4096},
      {"self_attn.k_proj.weight", 1024, 4096},
      {"self_attn.v_proj.weight", 1024, 4096},
      {"self_attn.o_proj.weight", 4096, 4096},
      {"mlp.gate_proj.weight", 14336, 4096},
      {"mlp.up_proj.weight", 14336, 4096},
      {"mlp.down_proj.weight", 4096, 14336},
      {"input_layernorm.weight", 1, 4096},
  }};
  std::vector<st::TensorData> tensors;
  tensors.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t layer = i / weights.size();
    const Weight& w = weights[i % weights.size()];
    const std::uint64_t rows = w.rows == 1 ? 1 : w.rows / divisor;
    tensors.push_back(st::TensorData::from_producer(
        "model.layers." + std::to_string(layer) + "." + w.suffix,
        layer % 2 == 0 ? st::Dtype::BF16 : st::Dtype::F32, {rows, w.cols / divisor}, fill_pattern));
  }
  return tensors;
}

// The JSON header (without the 8-byte length) of a realistic model with `count` tensors.
struct SyntheticHeader {
  std::string prefix;
  std::uint64_t data_size = 0;
  std::span<const std::byte> json() const { return std::as_bytes(std::span(prefix)).subspan(8); }
};

const SyntheticHeader& synthetic_header(std::size_t count) {
  static std::map<std::size_t, SyntheticHeader> cache;
  auto [it, inserted] = cache.try_emplace(count);
  if (inserted) {
    st::WriteOptions options;
    options.metadata = st::Metadata{{"format", "pt"}};
    const std::vector<st::TensorData> tensors = decoder_layout(count, 1);
    st::WritePlan plan = st::plan_write(tensors, options);
    it->second.prefix = std::move(plan.header);
    it->second.data_size = plan.data_size;
  }
  return it->second;
}

void BM_ParseHeader(benchmark::State& state) {
  const SyntheticHeader& header = synthetic_header(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    st::Header parsed = st::parse_header(header.json(), header.data_size, "synthetic");
    benchmark::DoNotOptimize(parsed.tensors.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * header.json().size()));
  state.counters["header_bytes"] = static_cast<double>(header.json().size());
}
BENCHMARK(BM_ParseHeader)->Arg(1000)->Arg(200000)->Unit(benchmark::kMillisecond)->UseRealTime();

constexpr std::size_t many_tensors = 200000;

// 200,000 tiny tensors: the header dominates, so opening measures header work only.
const std::vector<std::byte>& many_tensor_buffer() {
  static const std::vector<std::byte> buffer = [] {
    const std::vector<st::TensorData> tensors = decoder_layout(many_tensors, 1024);
    return st::write_to_buffer(tensors);
  }();
  return buffer;
}

const fs::path& many_tensor_file() {
  static const fs::path path = [] {
    fs::path p = data_dir() / "many_tensors.safetensors";
    const std::vector<std::byte>& buffer = many_tensor_buffer();
    if (!fs::exists(p) || fs::file_size(p) != buffer.size()) {
      st::AtomicFile out(p);
      out.write(buffer);
      out.commit();
    }
    return p;
  }();
  return path;
}

void BM_OpenFromMemory(benchmark::State& state) {
  const std::vector<std::byte>& buffer = many_tensor_buffer();
  for (auto _ : state) {
    st::File file = st::File::from_source(st::make_memory_source(buffer, "memory"));
    benchmark::DoNotOptimize(file.size());
  }
  state.counters["tensors"] = static_cast<double>(many_tensors);
}
BENCHMARK(BM_OpenFromMemory)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_OpenFile(benchmark::State& state) {
  const fs::path& path = many_tensor_file();
  const auto backend = static_cast<st::Backend>(state.range(0));
  for (auto _ : state) {
    st::File file = st::File::open(path, backend);
    benchmark::DoNotOptimize(file.size());
  }
  state.SetLabel(backend == st::Backend::mmap ? "mmap" : "pread");
  state.counters["tensors"] = static_cast<double>(many_tensors);
}
BENCHMARK(BM_OpenFile)
    ->Arg(static_cast<int>(st::Backend::mmap))
    ->Arg(static_cast<int>(st::Backend::pread))
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Seven decoder layers at a quarter of the width: 56 tensors, about 260 MB of data.
constexpr std::size_t big_tensors = 56;

const std::vector<st::TensorData>& big_layout() {
  static const std::vector<st::TensorData> tensors = decoder_layout(big_tensors, 4);
  return tensors;
}

// The same tensors as borrowed memory, for the write benchmarks.
struct BigInput {
  std::vector<std::vector<std::byte>> storage;
  std::vector<st::TensorData> tensors;
  std::uint64_t bytes = 0;
};

const BigInput& big_input() {
  static const BigInput input = [] {
    BigInput in;
    for (const st::TensorData& t : big_layout()) {
      const std::uint64_t size = st::byte_size(t.dtype, t.shape).bytes;
      std::vector<std::byte>& bytes = in.storage.emplace_back(size);
      fill_pattern(in.bytes, bytes);
      in.bytes += size;
    }
    for (std::size_t i = 0; i < big_layout().size(); ++i) {
      const st::TensorData& t = big_layout()[i];
      in.tensors.push_back(st::TensorData::from_bytes(t.name, t.dtype, t.shape, in.storage[i]));
    }
    return in;
  }();
  return input;
}

const fs::path& big_file() {
  static const fs::path path = [] {
    fs::path p = data_dir() / "big.safetensors";
    const std::uint64_t expected = st::plan_write(big_layout()).file_size();
    if (!fs::exists(p) || fs::file_size(p) != expected) st::write_file(p, big_layout());
    return p;
  }();
  return path;
}

// Prefaulted destination, so page faults of the caller's buffer are not measured.
std::vector<std::byte>& scratch(std::uint64_t bytes) {
  static std::vector<std::byte> buffer;
  if (buffer.size() < bytes) buffer.assign(bytes, std::byte{1});
  return buffer;
}

void BM_ReadAll(benchmark::State& state) {
  const auto backend = static_cast<st::Backend>(state.range(0));
  const st::File file = st::File::open(big_file(), backend);
  std::vector<std::byte>& out = scratch(file.header().data_size);
  for (auto _ : state) {
    for (const st::TensorInfo& info : file.tensors()) {
      file.read(info, std::span(out).subspan(info.data_begin, info.byte_count()));
    }
    benchmark::ClobberMemory();
  }
  state.SetLabel(backend == st::Backend::mmap ? "mmap" : "pread");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * file.header().data_size));
}
BENCHMARK(BM_ReadAll)
    ->Arg(static_cast<int>(st::Backend::mmap))
    ->Arg(static_cast<int>(st::Backend::pread))
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The physical reference: one memcpy of the same number of bytes between warm buffers.
void BM_Memcpy(benchmark::State& state) {
  const BigInput& in = big_input();
  static std::vector<std::byte> source(in.bytes, std::byte{2});
  std::vector<std::byte>& out = scratch(in.bytes);
  for (auto _ : state) {
    std::memcpy(out.data(), source.data(), in.bytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * in.bytes));
}
BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();

// The bound for producing a new buffer: memcpy into memory the kernel has yet to fault in,
// as write_to_buffer must do for its result.
void BM_MemcpyFresh(benchmark::State& state) {
  const BigInput& in = big_input();
  static std::vector<std::byte> source(in.bytes, std::byte{2});
  for (auto _ : state) {
    std::unique_ptr<std::byte[]> out(new std::byte[in.bytes]);
    std::memcpy(out.get(), source.data(), in.bytes);
    benchmark::DoNotOptimize(out.get());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * in.bytes));
}
BENCHMARK(BM_MemcpyFresh)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_WriteToBuffer(benchmark::State& state) {
  const BigInput& in = big_input();
  for (auto _ : state) {
    std::vector<std::byte> out = st::write_to_buffer(in.tensors);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * in.bytes));
}
BENCHMARK(BM_WriteToBuffer)->Unit(benchmark::kMillisecond)->UseRealTime();

// Includes the flush to disk that makes the write crash-safe, so it is bound by the device.
void BM_WriteFile(benchmark::State& state) {
  const BigInput& in = big_input();
  const fs::path path = data_dir() / "written.safetensors";
  for (auto _ : state) st::write_file(path, in.tensors);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * in.bytes));
  fs::remove(path);
}
BENCHMARK(BM_WriteFile)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
