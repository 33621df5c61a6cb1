// Benchmarks of the loader and of dtype conversion, each beside memcpy of the same bytes
// (wall-clock time everywhere, so that ratios compare like with like):
// a 512 MiB F32 checkpoint loaded with a warm page cache per method and thread count, and
// F32 -> BF16 / F16 conversion in memory. Scratch files go to SAFETENSORS_BENCH_DATA
// (overridable with the environment variable of the same name).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <safetensors/safetensors.hpp>
#include <string>
#include <thread>
#include <vector>

#include "../tools/touched_buffer.hpp"

namespace st = safetensors;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t file_bytes = std::uint64_t{512} << 20;
constexpr std::size_t cast_bytes = std::size_t{64} << 20;

fs::path data_dir() {
  const char* env = std::getenv("SAFETENSORS_BENCH_DATA");
  fs::path dir = env != nullptr && *env != '\0' ? fs::path(env) : fs::path(SAFETENSORS_BENCH_DATA);
  fs::create_directories(dir);
  return dir;
}

// Finite floats of every magnitude between 2^-20 and 2^20, both signs.
void fill_floats(std::uint64_t offset, std::span<std::byte> out) {
  for (std::size_t i = 0; i + 4 <= out.size(); i += 4) {
    const std::uint32_t n = static_cast<std::uint32_t>((offset + i) / 4);
    const std::uint32_t bits = ((n * 2654435761u) & 0x807FFFFFu) | ((107u + n % 40u) << 23);
    std::memcpy(out.data() + i, &bits, 4);
  }
}

// 32 F32 matrices of 16 MiB, written once and reused by later runs.
const st::Checkpoint& checkpoint() {
  static const st::Checkpoint opened = [] {
    const fs::path path = data_dir() / "loader-512mib-f32.safetensors";
    if (!fs::exists(path) || fs::file_size(path) < file_bytes) {
      std::vector<st::TensorData> tensors;
      for (int i = 0; i < 32; ++i) {
        tensors.push_back(st::TensorData::from_producer("layers." + std::to_string(i) + ".weight",
                                                        st::Dtype::F32, {2048, 2048}, fill_floats));
      }
      st::write_file(path, tensors);
    }
    return st::Checkpoint::open(path);
  }();
  return opened;
}

using Buffer = safetensors::tools::TouchedBuffer;
constexpr auto make_buffer = safetensors::tools::make_touched_buffer;

void set_bytes(benchmark::State& state, std::uint64_t bytes) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
}

void BM_Memcpy(benchmark::State& state) {
  const std::size_t bytes = static_cast<std::size_t>(state.range(0));
  const Buffer from = make_buffer(bytes), to = make_buffer(bytes);
  for (auto _ : state) {
    std::memcpy(to.get(), from.get(), bytes);
    benchmark::ClobberMemory();
  }
  set_bytes(state, bytes);
}
BENCHMARK(BM_Memcpy)
    ->Arg(file_bytes)
    ->Arg(cast_bytes)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

const char* method_name(st::LoadMethod method) {
  switch (method) {
    case st::LoadMethod::pread:
      return "pread";
    case st::LoadMethod::mmap:
      return "mmap";
    case st::LoadMethod::direct:
      return "direct";
    default:
      return "auto";
  }
}

// args: method, threads, convert to BF16 (0/1). Bytes are file bytes.
void BM_Load(benchmark::State& state) {
  const st::Checkpoint& source = checkpoint();
  st::LoadOptions options;
  options.method = static_cast<st::LoadMethod>(state.range(0));
  options.threads = static_cast<unsigned>(state.range(1));
  if (state.range(2) != 0) options.dtype = st::Dtype::BF16;
  const st::LoadPlan plan = st::plan_load(source, options);
  const Buffer buffer = make_buffer(plan.buffer_size);
  const std::span<std::byte> target(buffer.get(), plan.buffer_size);
  st::load_into(source, plan, target, options);  // warms the page cache
  for (auto _ : state) st::load_into(source, plan, target, options);
  set_bytes(state, source.total_bytes());
  state.SetLabel(std::string(method_name(options.method)) + (state.range(2) ? " to BF16" : ""));
}

// load() into new memory each time: allocation and first-touch faults included.
void BM_LoadOwned(benchmark::State& state) {
  const st::Checkpoint& source = checkpoint();
  st::LoadOptions options;
  options.threads = static_cast<unsigned>(state.range(0));
  (void)st::load(source, options);
  for (auto _ : state) benchmark::DoNotOptimize(st::load(source, options).buffer_size());
  set_bytes(state, source.total_bytes());
}

void thread_counts(benchmark::internal::Benchmark* b, bool with_methods) {
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> counts;
  for (int t = 1; t < hardware; t *= 2) counts.push_back(t);
  counts.push_back(hardware);
  if (!with_methods) {
    for (int t : counts) b->Arg(t);
    return;
  }
  for (st::LoadMethod m : {st::LoadMethod::pread, st::LoadMethod::mmap, st::LoadMethod::direct}) {
    for (int t : counts) b->Args({static_cast<int>(m), t, 0});
  }
  for (int t : counts) b->Args({static_cast<int>(st::LoadMethod::automatic), t, 1});
}

BENCHMARK(BM_Load)
    ->Apply([](benchmark::internal::Benchmark* b) { thread_counts(b, true); })
    ->ArgNames({"method", "threads", "bf16"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LoadOwned)
    ->Apply([](benchmark::internal::Benchmark* b) { thread_counts(b, false); })
    ->ArgNames({"threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One thread converting 64 MiB of input in memory; bytes are input bytes.
template <st::Dtype From, st::Dtype To>
void BM_Cast(benchmark::State& state) {
  const std::size_t out_bytes = cast_bytes / (st::dtype_bits(From) / 8) * (st::dtype_bits(To) / 8);
  const Buffer in = make_buffer(cast_bytes), out = make_buffer(out_bytes);
  fill_floats(0, {in.get(), cast_bytes});
  for (auto _ : state) {
    st::cast(From, {in.get(), cast_bytes}, To, {out.get(), out_bytes});
    benchmark::ClobberMemory();
  }
  set_bytes(state, cast_bytes);
}
BENCHMARK(BM_Cast<st::Dtype::F32, st::Dtype::BF16>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Cast<st::Dtype::F32, st::Dtype::F16>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Cast<st::Dtype::BF16, st::Dtype::F32>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Cast<st::Dtype::F16, st::Dtype::F32>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Cast<st::Dtype::F16, st::Dtype::BF16>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Cast<st::Dtype::F8_E4M3, st::Dtype::BF16>)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
