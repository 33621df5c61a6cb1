// `safetensors bench`: load throughput of a checkpoint per method and thread count, with the
// page cache warm and (where the machine lets us drop it) cold, next to memcpy and a plain
// sequential read of the same bytes.
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli_common.hpp"
#include "safetensors/safetensors.hpp"
#include "touched_buffer.hpp"

namespace safetensors::cli {
namespace {

struct BenchCliOptions {
  std::string path;
  std::string threads;
  std::string dtype;
  std::string methods = "pread,mmap,direct";
  unsigned repeat = 3;
  bool cold = true;
};

// Data is "cold" when at most this fraction of its pages is still cached after dropping.
constexpr double cold_enough = 0.02;

using Clock = std::chrono::steady_clock;

double seconds_of(const std::function<void()>& fn) {
  const auto start = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The fastest of `repeat` runs, after one untimed run that warms caches and memory.
double best_seconds(unsigned repeat, const std::function<void()>& fn) {
  fn();
  double best = seconds_of(fn);
  for (unsigned i = 1; i < repeat; ++i) best = std::min(best, seconds_of(fn));
  return best;
}

using Buffer = safetensors::tools::TouchedBuffer;
constexpr auto make_buffer = safetensors::tools::make_touched_buffer;

class Descriptor {
 public:
  explicit Descriptor(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) {
      throw Error(ErrorCode::io, path + ": cannot open: " + std::strerror(errno));
    }
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  ~Descriptor() { ::close(fd_); }
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

// What `cat file > /dev/null` does: read(2) through a 1 MiB buffer, file after file.
void sequential_read(const std::vector<std::string>& files) {
  std::vector<char> buffer(std::size_t{1} << 20);
  for (const std::string& path : files) {
    Descriptor fd(path);
    ssize_t n;
    while ((n = ::read(fd.get(), buffer.data(), buffer.size())) != 0) {
      if (n < 0 && errno != EINTR) {
        throw Error(ErrorCode::io, path + ": cannot read: " + std::strerror(errno));
      }
    }
  }
}

// Fraction of the files' pages in the page cache, from mincore(2) on a fresh mapping.
double cached_fraction(const std::vector<std::string>& files) {
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::uint64_t resident = 0, pages = 0;
  for (const std::string& path : files) {
    Descriptor fd(path);
    const off_t size = ::lseek(fd.get(), 0, SEEK_END);
    if (size <= 0) continue;
    void* base =
        ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ, MAP_SHARED, fd.get(), 0);
    if (base == MAP_FAILED) continue;
    std::vector<unsigned char> present((static_cast<std::size_t>(size) + page - 1) / page);
    if (::mincore(base, static_cast<std::size_t>(size), present.data()) == 0) {
      for (unsigned char p : present) resident += p & 1;
      pages += present.size();
    }
    ::munmap(base, static_cast<std::size_t>(size));
  }
  return pages ? static_cast<double>(resident) / static_cast<double>(pages) : 0.0;
}

// Evicts the files from the page cache: posix_fadvise(DONTNEED) needs no privileges; writing
// to /proc/sys/vm/drop_caches (root only) is the fallback. Returns how it worked, or nothing.
std::optional<std::string> drop_cache(const std::vector<std::string>& files) {
  for (const std::string& path : files) {
    Descriptor fd(path);
    ::fdatasync(fd.get());  // dirty pages cannot be dropped
    ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  }
  if (cached_fraction(files) <= cold_enough) return "posix_fadvise(POSIX_FADV_DONTNEED)";
  ::sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "1\n";
  if (cached_fraction(files) <= cold_enough) return "/proc/sys/vm/drop_caches";
  return std::nullopt;
}

std::vector<unsigned> parse_threads(const std::string& text) {
  std::vector<unsigned> out;
  if (text.empty()) {
    const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned t = 1; t < hardware; t *= 2) out.push_back(t);
    out.push_back(hardware);
    return out;
  }
  std::stringstream words(text);
  for (std::string word; std::getline(words, word, ',');) {
    try {
      const unsigned long value = std::stoul(word);
      if (value == 0 || value > 1024) throw std::out_of_range(word);
      out.push_back(static_cast<unsigned>(value));
    } catch (const std::exception&) {
      throw Error(ErrorCode::invalid_argument,
                  "--threads wants a list of counts from 1 to 1024 like 1,2,4, not '" + text + "'");
    }
  }
  return out;
}

std::vector<std::pair<std::string, LoadMethod>> parse_methods(const std::string& text) {
  std::vector<std::pair<std::string, LoadMethod>> out;
  std::stringstream words(text);
  for (std::string word; std::getline(words, word, ',');) {
    if (word == "pread") {
      out.emplace_back(word, LoadMethod::pread);
    } else if (word == "mmap") {
      out.emplace_back(word, LoadMethod::mmap);
    } else if (word == "direct") {
      out.emplace_back(word, LoadMethod::direct);
    } else if (word == "auto" || word == "automatic") {
      out.emplace_back("auto", LoadMethod::automatic);
    } else {
      throw Error(ErrorCode::invalid_argument,
                  "--methods: unknown method '" + word + "' (pread, mmap, direct, auto)");
    }
  }
  return out;
}

double gbps(std::uint64_t bytes, double seconds) {
  return static_cast<double>(bytes) / seconds / 1e9;
}

int run_bench(const BenchCliOptions& options) {
  const std::vector<unsigned> thread_counts = parse_threads(options.threads);
  const auto methods = parse_methods(options.methods);
  // Opened without a mapping, so no page of the data is pinned by this process.
  const Checkpoint checkpoint = Checkpoint::open(options.path, Backend::pread);
  LoadOptions base;
  if (!options.dtype.empty()) base.dtype = parse_cast_dtype(options.dtype);
  const LoadPlan plan = plan_load(checkpoint, base);
  const std::uint64_t bytes = checkpoint.total_bytes();
  std::vector<std::string> files;
  for (const File& file : checkpoint.files()) files.push_back(file.name());
  if (bytes == 0) throw Error(ErrorCode::invalid_argument, options.path + " holds no tensor data");

  fmt::print("{}: {} tensors in {} file{}, {} of tensor data; loading as {}\n",
             printable(options.path), checkpoint.tensors().size(), files.size(),
             files.size() == 1 ? "" : "s", human_size(bytes),
             base.dtype ? std::string(dtype_name(*base.dtype)) : "stored dtypes");
  fmt::print(
      "GB/s counts tensor bytes read from the files (10^9 bytes per second); best of {}.\n\n",
      options.repeat);

  const Buffer buffer = make_buffer(plan.buffer_size);
  const std::span<std::byte> target(buffer.get(), plan.buffer_size);
  // memcpy of the same number of bytes, memory to memory, one thread.
  const std::size_t copy_bytes =
      static_cast<std::size_t>(std::min<std::uint64_t>(bytes, 1ull << 30));
  double memcpy_gbps = 0;
  {
    const Buffer from = make_buffer(copy_bytes), to = make_buffer(copy_bytes);
    memcpy_gbps =
        gbps(copy_bytes,
             best_seconds(options.repeat, [&] { std::memcpy(to.get(), from.get(), copy_bytes); }));
  }
  const double read_gbps =
      gbps(bytes, best_seconds(options.repeat, [&] { sequential_read(files); }));

  std::optional<std::string> dropped;
  double cold_read_gbps = 0;
  if (options.cold) {
    dropped = drop_cache(files);
    if (dropped) cold_read_gbps = gbps(bytes, seconds_of([&] { sequential_read(files); }));
  }

  fmt::print("{:<34}{:>9}\n", "baseline", "GB/s");
  fmt::print("{:<34}{:>9.2f}\n", "memcpy (1 thread)", memcpy_gbps);
  fmt::print("{:<34}{:>9.2f}\n", "sequential read(2), warm", read_gbps);
  if (dropped) fmt::print("{:<34}{:>9.2f}\n", "sequential read(2), cold", cold_read_gbps);
  fmt::print("\n{:<8}{:>8}{:>11}{:>10}{:>10}", "method", "threads", "warm GB/s", "x memcpy",
             "x read");
  if (dropped) fmt::print("{:>11}{:>12}", "cold GB/s", "x cold read");
  fmt::print("\n");

  for (const auto& [name, method] : methods) {
    for (unsigned threads : thread_counts) {
      LoadOptions run = base;
      run.method = method;
      run.threads = threads;
      const double warm = gbps(
          bytes, best_seconds(options.repeat, [&] { load_into(checkpoint, plan, target, run); }));
      fmt::print("{:<8}{:>8}{:>11.2f}{:>10.2f}{:>10.2f}", name, threads, warm, warm / memcpy_gbps,
                 warm / read_gbps);
      if (dropped) {
        drop_cache(files);
        const double cold =
            gbps(bytes, seconds_of([&] { load_into(checkpoint, plan, target, run); }));
        fmt::print("{:>11.2f}{:>12.2f}", cold, cold / cold_read_gbps);
      }
      fmt::print("\n");
    }
  }
  // What a caller of load() sees: a new allocation each time, its page faults included.
  for (unsigned threads : thread_counts) {
    LoadOptions run = base;
    run.threads = threads;
    const double owned =
        gbps(bytes, best_seconds(options.repeat, [&] { (void)load(checkpoint, run); }));
    fmt::print("{:<8}{:>8}{:>11.2f}{:>10.2f}{:>10.2f}\n", "owned", threads, owned,
               owned / memcpy_gbps, owned / read_gbps);
  }
  fmt::print(
      "(rows above load into memory touched beforehand; \"owned\" is load() with method "
      "auto into new memory)\n");
  if (!options.cold) {
    fmt::print("\ncold cache: not measured (--no-cold)\n");
  } else if (dropped) {
    fmt::print("\ncold cache: dropped with {} before each cold run\n", *dropped);
  } else {
    fmt::print(
        "\ncold cache: not possible here (posix_fadvise left the pages cached and "
        "/proc/sys/vm/drop_caches could not be written); only warm results are shown\n");
  }
  return 0;
}

}  // namespace

Command add_bench(CLI::App& parent) {
  auto options = std::make_shared<BenchCliOptions>();
  CLI::App* app = parent.add_subcommand(
      "bench",
      "Measure how fast a checkpoint loads into memory: throughput per load method and thread "
      "count with the page cache warm and, where the files can be evicted from it, cold; next "
      "to memcpy of the same number of bytes and a plain sequential read(2) of the files.");
  app->add_option("PATH", options->path, "Safetensors file, checkpoint directory or index")
      ->required();
  app->add_option("--threads", options->threads,
                  "Thread counts, comma-separated (default: powers of two up to the cores)");
  app->add_option("--dtype", options->dtype, "Convert floating-point tensors: f32, f16 or bf16");
  app->add_option("--methods", options->methods, "Methods: pread, mmap, direct, auto")
      ->capture_default_str();
  app->add_option("--repeat", options->repeat, "Warm runs per measurement (the best counts)")
      ->check(CLI::Range(1u, 1000u))
      ->capture_default_str();
  app->add_flag("!--no-cold", options->cold, "Skip the cold-cache measurements");
  return {app, [options] { return run_bench(*options); }};
}

}  // namespace safetensors::cli
