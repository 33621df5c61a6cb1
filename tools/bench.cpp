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
#include "progress.hpp"
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
  bool json = false;
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

// One row of the table: a load method at a thread count.
struct BenchRow {
  std::string method;
  unsigned threads = 0;
  double warm_gbps = 0;
  std::optional<double> cold_gbps;  // when the cache could be dropped
  // A sequential read(2) of the same files measured just before the cold run, which the cold
  // figure is compared with: the disk's rate on this VM swings from one minute to the next.
  std::optional<double> cold_read_gbps;
};

// Everything measured, printed afterwards as a table or as JSON.
struct BenchResult {
  std::string path;
  std::size_t tensors = 0;
  std::size_t files = 0;
  std::uint64_t bytes = 0;
  std::optional<Dtype> dtype;
  unsigned repeat = 0;
  bool cold_requested = true;
  double memcpy_gbps = 0;
  double read_gbps = 0;
  std::optional<double> cold_read_gbps;  // the median of the rows' paired reads
  std::optional<std::string> dropped;    // how the cache was dropped
  std::vector<BenchRow> rows;            // "owned" rows last
};

// A checkpoint opened for benchmarking, what it is loaded as, and the progress of the runs.
class Bench {
 public:
  explicit Bench(const BenchCliOptions& options)
      : options_(options),
        thread_counts_(parse_threads(options.threads)),
        methods_(parse_methods(options.methods)),
        // Opened without a mapping, so no page of the data is pinned by this process.
        checkpoint_(Checkpoint::open(options.path, Backend::pread)),
        progress_("benchmarking", measurements(), Progress::Unit::items) {
    if (!options.dtype.empty()) base_.dtype = parse_cast_dtype(options.dtype);
    plan_ = plan_load(checkpoint_, base_);
    for (const File& file : checkpoint_.files()) files_.push_back(file.name());
    if (checkpoint_.total_bytes() == 0) {
      throw Error(ErrorCode::invalid_argument, options.path + " holds no tensor data");
    }
  }

  BenchResult run() {
    BenchResult result;
    result.path = options_.path;
    result.tensors = checkpoint_.tensors().size();
    result.files = files_.size();
    result.bytes = checkpoint_.total_bytes();
    result.dtype = base_.dtype;
    result.repeat = options_.repeat;
    result.cold_requested = options_.cold;
    measure_baselines(result);
    const Buffer buffer = make_buffer(plan_.buffer_size);
    const std::span<std::byte> target(buffer.get(), plan_.buffer_size);
    for (const auto& [name, method] : methods_) {
      for (unsigned threads : thread_counts_) {
        LoadOptions run = base_;
        run.method = method;
        run.threads = threads;
        result.rows.push_back(measure_row(result, name, threads, true,
                                          [&] { load_into(checkpoint_, plan_, target, run); }));
      }
    }
    // What load_file(materialize=True) does: map each file and read every page in, no copy
    // (casting needs a copy, so not with --dtype).
    if (!base_.dtype) {
      for (unsigned threads : thread_counts_) {
        result.rows.push_back(measure_row(result, "mapped", threads, true, [&] {
          for (const std::string& path : files_) File::open(path, Backend::mmap).populate(threads);
        }));
      }
    }
    // What a caller of a copying load() sees: a new allocation each time, its page faults
    // included. (load() with LoadMethod::automatic maps the files instead when nothing
    // converts, as the "mapped" rows measure.)
    for (unsigned threads : thread_counts_) {
      LoadOptions run = base_;
      run.threads = threads;
      run.method = LoadMethod::pread;
      result.rows.push_back(
          measure_row(result, "owned", threads, true, [&] { (void)load(checkpoint_, run); }));
    }
    std::vector<double> reads;
    for (const BenchRow& row : result.rows) {
      if (row.cold_read_gbps) reads.push_back(*row.cold_read_gbps);
    }
    if (!reads.empty()) {
      std::sort(reads.begin(), reads.end());
      result.cold_read_gbps = reads[reads.size() / 2];
    }
    progress_.clear();
    return result;
  }

 private:
  // Called while progress_ is built: only members declared before it may be used.
  std::uint64_t measurements() const {
    const std::uint64_t mapped_rows = options_.dtype.empty() ? thread_counts_.size() : 0;
    return 1 + (methods_.size() + 1) * thread_counts_.size() + mapped_rows;
  }

  // Shows the measurement about to run.
  void step(const std::string& what) {
    progress_.relabel("bench: " + what);
    progress_.update(steps_done_++);
  }

  void measure_baselines(BenchResult& result) {
    step("memcpy and read(2)");
    const std::uint64_t bytes = result.bytes;
    // memcpy of the same number of bytes, memory to memory, one thread.
    const std::size_t copy_bytes =
        static_cast<std::size_t>(std::min<std::uint64_t>(bytes, 1ull << 30));
    const Buffer from = make_buffer(copy_bytes), to = make_buffer(copy_bytes);
    result.memcpy_gbps =
        gbps(copy_bytes,
             best_seconds(options_.repeat, [&] { std::memcpy(to.get(), from.get(), copy_bytes); }));
    result.read_gbps = gbps(bytes, best_seconds(options_.repeat, [&] { sequential_read(files_); }));
    if (!options_.cold) return;
    result.dropped = drop_cache(files_);
  }

  // Warm, and cold too when the cache can be dropped and `cold` is asked for.
  BenchRow measure_row(const BenchResult& result, const std::string& name, unsigned threads,
                       bool cold, const std::function<void()>& load_once) {
    step(fmt::format("{}, {} thread{}", name, threads, threads == 1 ? "" : "s"));
    BenchRow row;
    row.method = name;
    row.threads = threads;
    row.warm_gbps = gbps(result.bytes, best_seconds(options_.repeat, load_once));
    if (cold && result.dropped) {
      drop_cache(files_);
      row.cold_read_gbps = gbps(result.bytes, seconds_of([&] { sequential_read(files_); }));
      drop_cache(files_);
      row.cold_gbps = gbps(result.bytes, seconds_of(load_once));
    }
    return row;
  }

  const BenchCliOptions& options_;
  std::vector<unsigned> thread_counts_;
  std::vector<std::pair<std::string, LoadMethod>> methods_;
  Checkpoint checkpoint_;
  Progress progress_;
  LoadOptions base_;
  LoadPlan plan_;
  std::vector<std::string> files_;
  std::uint64_t steps_done_ = 0;
};

void print_text(const BenchResult& r) {
  fmt::print("{}: {} tensors in {} file{}, {} of tensor data; loading as {}\n", printable(r.path),
             r.tensors, r.files, r.files == 1 ? "" : "s", human_size(r.bytes),
             r.dtype ? std::string(dtype_name(*r.dtype)) : "stored dtypes");
  fmt::print(
      "GB/s counts tensor bytes read from the files (10^9 bytes per second); best of {}.\n\n",
      r.repeat);
  fmt::print("{:<34}{:>9}\n", "baseline", "GB/s");
  fmt::print("{:<34}{:>9.2f}\n", "memcpy (1 thread)", r.memcpy_gbps);
  fmt::print("{:<34}{:>9.2f}\n", "sequential read(2), warm", r.read_gbps);
  if (r.cold_read_gbps)
    fmt::print("{:<34}{:>9.2f}\n", "sequential read(2), cold (median)", *r.cold_read_gbps);
  fmt::print("\n{:<8}{:>8}{:>11}{:>10}{:>10}", "method", "threads", "warm GB/s", "x memcpy",
             "x read");
  if (r.cold_read_gbps) fmt::print("{:>11}{:>12}", "cold GB/s", "x cold read");
  fmt::print("\n");
  for (const BenchRow& row : r.rows) {
    fmt::print("{:<8}{:>8}{:>11.2f}{:>10.2f}{:>10.2f}", row.method, row.threads, row.warm_gbps,
               row.warm_gbps / r.memcpy_gbps, row.warm_gbps / r.read_gbps);
    if (row.cold_gbps) {
      fmt::print("{:>11.2f}{:>12.2f}", *row.cold_gbps, *row.cold_gbps / *row.cold_read_gbps);
    }
    fmt::print("\n");
  }
  fmt::print(
      "(pread, mmap and direct load into memory touched beforehand; \"mapped\" maps the files "
      "and reads every page in, as load_file(materialize=True) and load() with method auto "
      "when nothing converts; \"owned\" is load() copying into new memory; \"x cold read\" "
      "divides by a read(2) of the files measured just before each cold run)\n");
  if (!r.cold_requested) {
    fmt::print("\ncold cache: not measured (--no-cold)\n");
  } else if (r.dropped) {
    fmt::print("\ncold cache: dropped with {} before each cold run\n", *r.dropped);
  } else {
    fmt::print(
        "\ncold cache: not possible here (posix_fadvise left the pages cached and "
        "/proc/sys/vm/drop_caches could not be written); only warm results are shown\n");
  }
}

std::string json_optional(const std::optional<double>& value) {
  return value ? json_number(*value) : "null";
}

// GB/s as numbers; null where a cold figure was not measured.
void print_json(const BenchResult& r) {
  std::vector<std::string> rows;
  for (const BenchRow& row : r.rows) {
    rows.push_back(JsonObject()
                       .text("method", row.method)
                       .number("threads", std::uint64_t{row.threads})
                       .number("warm_gbps", row.warm_gbps)
                       .raw("cold_gbps", json_optional(row.cold_gbps))
                       .raw("cold_read_gbps", json_optional(row.cold_read_gbps))
                       .str());
  }
  JsonObject out;
  out.text("file", r.path)
      .number("tensors", std::uint64_t{r.tensors})
      .number("files", std::uint64_t{r.files})
      .number("bytes", r.bytes)
      .raw("dtype", r.dtype ? json_string(dtype_name(*r.dtype)) : "null")
      .number("repeat", std::uint64_t{r.repeat})
      .number("memcpy_gbps", r.memcpy_gbps)
      .number("read_gbps", r.read_gbps)
      .raw("cold_read_gbps", json_optional(r.cold_read_gbps))
      .raw("cold_cache_dropped_with", r.dropped ? json_string(*r.dropped) : "null")
      .raw("rows", json_array(rows));
  fmt::print("{}\n", out.str());
}

int run_bench(const BenchCliOptions& options) {
  const BenchResult result = Bench(options).run();
  if (options.json) {
    print_json(result);
  } else {
    print_text(result);
  }
  return 0;
}
}  // namespace

Command add_bench(CLI::App& parent) {
  auto options = std::make_shared<BenchCliOptions>();
  CLI::App* app = parent.add_subcommand(
      "bench",
      "Measure how fast a checkpoint loads\n\n"
      "Measures how fast a checkpoint loads into memory: throughput per load method and thread "
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
  app->add_flag("--json", options->json,
                "Print the results as JSON: file, tensors, files, bytes, dtype, repeat, "
                "memcpy_gbps, read_gbps, cold_read_gbps, cold_cache_dropped_with, rows (method, "
                "threads, warm_gbps, cold_gbps, cold_read_gbps: the read(2) paired with the "
                "cold run); null where not measured");
  return {app, [options] { return run_bench(*options); }};
}

}  // namespace safetensors::cli
