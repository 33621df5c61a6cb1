#include "safetensors/loader.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "expect_error.hpp"
#include "safetensors/cast.hpp"
#include "safetensors/error.hpp"
#include "safetensors/writer.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

namespace fs = std::filesystem;

struct Original {
  std::string name;
  Dtype dtype;
  std::vector<std::uint64_t> shape;
  std::vector<std::byte> bytes;
};

std::vector<std::byte> random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 random(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(random());
  return out;
}

// A mix of dtypes and sizes: a tensor large enough to be split across threads, odd element
// counts, an empty tensor, a scalar, and dtypes that do not convert.
std::vector<Original> sample_tensors() {
  std::vector<Original> out;
  auto add = [&](std::string name, Dtype dtype, std::vector<std::uint64_t> shape) {
    const std::uint64_t bytes = byte_size(dtype, shape).bytes;
    out.push_back({std::move(name), dtype, std::move(shape),
                   random_bytes(bytes, static_cast<unsigned>(out.size() + 1))});
  };
  add("embed.weight", Dtype::F32, {1537, 1024});  // about 6 MiB
  add("layers.0.attn.weight", Dtype::F32, {33, 17});
  add("layers.0.norm.weight", Dtype::F16, {1023});
  add("layers.1.attn.weight", Dtype::BF16, {129, 65});
  add("layers.1.norm.weight", Dtype::F32, {7});
  add("layers.10.attn.weight", Dtype::F8_E4M3, {4099});
  add("layers.2.scale", Dtype::F8_E5M2, {333});
  add("positions", Dtype::I64, {1000});
  add("mask", Dtype::BOOL, {13});
  add("double", Dtype::F64, {5});
  add("empty", Dtype::F32, {0, 4});
  add("scalar", Dtype::F32, {});
  return out;
}

std::vector<TensorData> as_data(const std::vector<Original>& tensors) {
  std::vector<TensorData> data;
  for (const Original& t : tensors) {
    data.push_back(TensorData::from_bytes(t.name, t.dtype, t.shape, t.bytes));
  }
  return data;
}

const Original& by_name(const std::vector<Original>& tensors, const std::string& name) {
  return *std::find_if(tensors.begin(), tensors.end(),
                       [&](const Original& t) { return t.name == name; });
}

// The bytes a loaded tensor must hold: the original, or its `cast` when it converts.
std::vector<std::byte> expected_bytes(const Original& source, Dtype to) {
  if (to == source.dtype) return source.bytes;
  const std::size_t count = source.bytes.size() / (dtype_bits(source.dtype) / 8);
  std::vector<std::byte> out(count * (dtype_bits(to) / 8));
  cast(source.dtype, source.bytes, to, out);
  return out;
}

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tensors_ = sample_tensors();
    path_ = test::unique_path("loader");
    write_file(path_, as_data(tensors_));
    checkpoint_ = Checkpoint::open(path_);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove(path_, ignored);
  }

  // Every tensor of `loaded` against the originals, converted to `dtype` when castable.
  void expect_loaded(const LoadedCheckpoint& loaded, std::optional<Dtype> dtype,
                     const std::string& what) {
    for (const LoadedTensor& tensor : loaded.tensors()) {
      const Original& source = by_name(tensors_, tensor.name);
      const Dtype to = dtype && can_cast(source.dtype, *dtype) ? *dtype : source.dtype;
      EXPECT_EQ(tensor.dtype, to) << what << " " << tensor.name;
      EXPECT_EQ(tensor.shape, source.shape) << what << " " << tensor.name;
      EXPECT_EQ(tensor.offset % std::max(dtype_bits(to) / 8, 1u), 0u) << what << " " << tensor.name;
      const auto bytes = loaded.bytes(tensor);
      const auto expected = expected_bytes(source, to);
      ASSERT_EQ(bytes.size(), expected.size()) << what << " " << tensor.name;
      EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), expected.begin()))
          << what << " " << tensor.name;
    }
  }

  std::vector<std::string> loaded_names(const LoadOptions& options) {
    std::vector<std::string> names;
    for (const LoadedTensor& t : plan_load(checkpoint_, options).tensors) names.push_back(t.name);
    return names;
  }

  std::vector<Original> tensors_;
  fs::path path_;
  Checkpoint checkpoint_;
};

// The buffer holds exactly the tensors' bytes, widest elements first, each tensor aligned to
// its element size.
void expect_packed(const LoadPlan& plan) {
  std::vector<const LoadedTensor*> by_offset;
  std::uint64_t total = 0;
  for (const LoadedTensor& t : plan.tensors) {
    by_offset.push_back(&t);
    total += t.byte_count;
  }
  std::stable_sort(
      by_offset.begin(), by_offset.end(),
      [](const LoadedTensor* a, const LoadedTensor* b) { return a->offset < b->offset; });
  std::uint64_t end = 0;
  unsigned previous_bits = 64;
  for (const LoadedTensor* t : by_offset) {
    EXPECT_EQ(t->offset, end) << t->name << ": the buffer has a gap or an overlap";
    EXPECT_LE(dtype_bits(t->dtype), previous_bits) << t->name << ": not widest first";
    EXPECT_EQ(t->offset % std::max(dtype_bits(t->dtype) / 8, 1u), 0u) << t->name;
    end = t->offset + t->byte_count;
    previous_bits = dtype_bits(t->dtype);
  }
  EXPECT_EQ(plan.buffer_size, total);
}

TEST_F(LoaderTest, LoadsEverythingInNameOrderWithAlignedOffsets) {
  const LoadedCheckpoint loaded = load(checkpoint_);
  ASSERT_EQ(loaded.tensors().size(), tensors_.size());
  EXPECT_TRUE(
      std::is_sorted(loaded.tensors().begin(), loaded.tensors().end(),
                     [](const LoadedTensor& a, const LoadedTensor& b) { return a.name < b.name; }));
  expect_loaded(loaded, std::nullopt, "plain");
  expect_packed(plan_load(checkpoint_));
  std::uint64_t total = 0;
  for (const LoadedTensor& t : loaded.tensors()) total += t.byte_count;
  EXPECT_EQ(loaded.buffer_size(), total);
  ASSERT_NE(loaded.find("positions"), nullptr);
  EXPECT_EQ(loaded.find("positions")->dtype, Dtype::I64);
  EXPECT_EQ(loaded.find("missing"), nullptr);
  // An owned buffer starts 64-byte aligned.
  LoadOptions copy;
  copy.method = LoadMethod::pread;
  const LoadedCheckpoint owned = load(checkpoint_, copy);
  ASSERT_FALSE(owned.mapped());
  expect_loaded(owned, std::nullopt, "owned");
  for (const LoadedTensor& t : owned.tensors()) {
    const auto start = reinterpret_cast<std::uintptr_t>(owned.bytes(t).data());
    EXPECT_EQ((start - t.offset) % 64, 0u) << t.name;
  }
}

TEST_F(LoaderTest, AutomaticMapsTheFilesWhenNothingConverts) {
  const LoadedCheckpoint loaded = load(checkpoint_);
  ASSERT_TRUE(loaded.mapped());
  expect_loaded(loaded, std::nullopt, "mapped");
  for (const LoadedTensor& t : loaded.tensors()) {
    const auto start = reinterpret_cast<std::uintptr_t>(loaded.bytes(t).data());
    EXPECT_EQ(start % std::max(dtype_bits(t.dtype) / 8, 1u), 0u) << t.name;
  }
  // Copy-on-write: writing to a tensor never reaches the file.
  const LoadedTensor& embed = *loaded.find("embed.weight");
  std::fill_n(loaded.bytes(embed).data(), 4096, std::byte{0x5a});
  const LoadedCheckpoint again = load(Checkpoint::open(path_));
  expect_loaded(again, std::nullopt, "reloaded");
  // A copy of a LoadedTensor finds its bytes by name; an unknown name has none.
  LoadedTensor copied = *loaded.find("positions");
  EXPECT_EQ(loaded.bytes(copied).data(), loaded.bytes(*loaded.find("positions")).data());
  copied.name = "absent";
  EXPECT_TRUE(loaded.bytes(copied).empty());
  // A conversion copies, for every tensor.
  LoadOptions to_bf16;
  to_bf16.dtype = Dtype::BF16;
  const LoadedCheckpoint converted = load(checkpoint_, to_bf16);
  EXPECT_FALSE(converted.mapped());
  expect_loaded(converted, Dtype::BF16, "converted");
}

TEST_F(LoaderTest, MappedLoadsSubsetsAndRefusesConversions) {
  LoadOptions options;
  options.method = LoadMethod::mapped;
  options.pattern = "layers.1*";
  const LoadedCheckpoint subset = load(checkpoint_, options);
  EXPECT_TRUE(subset.mapped());
  EXPECT_EQ(subset.tensors().size(), 3u);  // layers.1.*, layers.10.*
  expect_loaded(subset, std::nullopt, "subset");
  options.dtype = Dtype::F16;
  test::expect_error([&] { (void)load(checkpoint_, options); }, ErrorCode::invalid_argument,
                     {"LoadMethod::mapped", "conversion"});
  // load_into fills caller memory, so it reads instead.
  const LoadPlan plan = plan_load(checkpoint_);
  std::vector<std::byte> buffer(plan.buffer_size);
  LoadOptions into;
  into.method = LoadMethod::mapped;
  load_into(checkpoint_, plan, buffer, into);
  const LoadedTensor& positions =
      *std::find_if(plan.tensors.begin(), plan.tensors.end(),
                    [](const auto& t) { return t.name == "positions"; });
  const Original& source = by_name(tensors_, "positions");
  EXPECT_TRUE(std::equal(source.bytes.begin(), source.bytes.end(),
                         buffer.begin() + static_cast<std::ptrdiff_t>(positions.offset)));
}

// A mapped load reads pages in steps and reports each (so that a caller can stop it, as
// Python's Ctrl-C does): counts that grow, the total once at the end, and an exception from
// the callback ends the load.
TEST(Loader, MappedLoadsReportProgressAndCanBeStopped) {
  // 160 MiB of zeros in 4 tensors, sparse: 5 steps of 32 MiB, nothing written to disk.
  const std::uint64_t part = std::uint64_t{40} << 20;
  std::string header = "{";
  for (int i = 0; i < 4; ++i) {
    header += (i ? ",\"t" : "\"t") + std::to_string(i) + R"(":{"dtype":"U8","shape":[)" +
              std::to_string(part) + R"(],"data_offsets":[)" + std::to_string(i * part) + "," +
              std::to_string((i + 1) * part) + "]}";
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  const fs::path path = test::unique_path("loader-mapped-progress");
  test::write_file(path, test::file_bytes(header, {}));
  fs::resize_file(path, 8 + header.size() + 4 * part);
  const Checkpoint checkpoint = Checkpoint::open(path);
  LoadOptions options;
  options.method = LoadMethod::mapped;
  options.threads = 1;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
  options.progress = [&](std::uint64_t done, std::uint64_t total) {
    calls.emplace_back(done, total);
  };
  const LoadedCheckpoint loaded = load(checkpoint, options);
  EXPECT_TRUE(loaded.mapped());
  ASSERT_GE(calls.size(), 5u);  // the steps before the last, and the end
  for (std::size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].second, 4 * part);
    if (i > 0) {
      EXPECT_LT(calls[i - 1].first, calls[i].first);
    }
  }
  EXPECT_EQ(calls.back().first, 4 * part);

  int reports = 0;
  options.progress = [&](std::uint64_t, std::uint64_t) {
    ++reports;
    throw std::runtime_error("stopped");
  };
  EXPECT_THROW((void)load(checkpoint, options), std::runtime_error);
  EXPECT_EQ(reports, 1);
  fs::remove(path);
}

TEST(Loader, AutomaticCopiesTensorsTheFileLeavesMisaligned) {
  // An unpadded header puts the data at an odd offset: an F32 there is not 4-byte aligned.
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_NE((8 + header.size()) % 4, 0u);
  const std::vector<std::byte> data = test::counting_bytes(8);
  const fs::path path = test::unique_path("loader-misaligned");
  test::write_file(path, test::file_bytes(header, data));
  const Checkpoint checkpoint = Checkpoint::open(path);
  const LoadedCheckpoint automatic = load(checkpoint);
  EXPECT_FALSE(automatic.mapped());
  LoadOptions options;
  options.method = LoadMethod::mapped;
  const LoadedCheckpoint mapped = load(checkpoint, options);
  EXPECT_TRUE(mapped.mapped());
  for (const LoadedCheckpoint* loaded : {&automatic, &mapped}) {
    const auto bytes = loaded->bytes(loaded->tensors().front());
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), data.begin(), data.end()));
  }
  fs::remove(path);
}

TEST_F(LoaderTest, PlanIsExactAfterConversion) {
  LoadOptions options;
  options.dtype = Dtype::BF16;
  const LoadPlan plan = plan_load(checkpoint_, options);
  for (const LoadedTensor& t : plan.tensors) {
    const Original& source = by_name(tensors_, t.name);
    EXPECT_EQ(t.byte_count, expected_bytes(source, t.dtype).size()) << t.name;
  }
  expect_packed(plan);
  EXPECT_EQ(plan_load(checkpoint_, options).tensors.size(), tensors_.size());
}

TEST_F(LoaderTest, SelectsByNamesAndPattern) {
  LoadOptions options;
  options.names = {"positions", "embed.weight", "positions"};
  EXPECT_EQ(loaded_names(options), (std::vector<std::string>{"embed.weight", "positions"}));

  options.names.clear();
  options.pattern = "layers.1*.weight";
  EXPECT_EQ(loaded_names(options),
            (std::vector<std::string>{"layers.1.attn.weight", "layers.1.norm.weight",
                                      "layers.10.attn.weight"}));
  options.pattern = "layers.?.*";
  EXPECT_EQ(loaded_names(options).size(), 5u);
  options.pattern = "*";
  EXPECT_EQ(loaded_names(options).size(), tensors_.size());
  options.pattern = "nothing*";
  EXPECT_TRUE(loaded_names(options).empty());

  // Names and a pattern add up.
  options.pattern = "layers.2.*";
  options.names = {"mask"};
  EXPECT_EQ(loaded_names(options), (std::vector<std::string>{"layers.2.scale", "mask"}));

  options.names = {"layers.0.attn.weight"};
  options.pattern.clear();
  options.dtype = Dtype::F16;
  const LoadedCheckpoint loaded = load(checkpoint_, options);
  ASSERT_EQ(loaded.tensors().size(), 1u);
  EXPECT_EQ(loaded.buffer_size(), 33u * 17u * 2u);
  expect_loaded(loaded, Dtype::F16, "one name");
}

TEST_F(LoaderTest, AbsentNameIsTensorNotFound) {
  LoadOptions options;
  options.names = {"embed.weight", "no.such.tensor"};
  try {
    (void)plan_load(checkpoint_, options);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::tensor_not_found);
    EXPECT_NE(std::string(e.what()).find("no.such.tensor"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path_.string()), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)load(checkpoint_, options), Error);
}

TEST_F(LoaderTest, CallerMemoryGetsTheSameBytesAsOwnedMemory) {
  LoadOptions options;
  options.dtype = Dtype::F16;
  const LoadPlan plan = plan_load(checkpoint_, options);
  const LoadedCheckpoint owned = load(checkpoint_, options);
  ASSERT_EQ(owned.buffer_size(), plan.buffer_size);

  // Extra room after the plan stays untouched.
  std::vector<std::byte> buffer(plan.buffer_size + 100, std::byte{0xAB});
  load_into(checkpoint_, plan, buffer, options);
  for (const LoadedTensor& t : plan.tensors) {
    const auto mine = std::span(buffer).subspan(t.offset, t.byte_count);
    const auto theirs = owned.bytes(*owned.find(t.name));
    EXPECT_TRUE(std::equal(mine.begin(), mine.end(), theirs.begin(), theirs.end())) << t.name;
  }
  EXPECT_TRUE(std::all_of(buffer.end() - 100, buffer.end(),
                          [](std::byte b) { return b == std::byte{0xAB}; }));

  std::vector<std::byte> small(plan.buffer_size - 1);
  try {
    load_into(checkpoint_, plan, small, options);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find(std::to_string(plan.buffer_size)), std::string::npos);
  }
}

TEST_F(LoaderTest, RejectsPlansTheCheckpointCannotFill) {
  LoadPlan plan = plan_load(checkpoint_);
  std::vector<std::byte> buffer(plan.buffer_size);
  LoadPlan renamed = plan;
  renamed.tensors[0].name = "ghost";
  EXPECT_THROW(
      {
        try {
          load_into(checkpoint_, renamed, buffer);
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::tensor_not_found);
          throw;
        }
      },
      Error);
  LoadPlan retyped = plan;
  for (LoadedTensor& t : retyped.tensors) {
    if (t.name == "positions") t.dtype = Dtype::F32;  // I64 does not convert
  }
  EXPECT_THROW(load_into(checkpoint_, retyped, buffer), Error);
}

TEST_F(LoaderTest, EveryMethodAndThreadCountGivesIdenticalBytes) {
  const LoadMethod methods[] = {LoadMethod::automatic, LoadMethod::pread, LoadMethod::mmap,
                                LoadMethod::direct};
  for (std::optional<Dtype> dtype : {std::optional<Dtype>{}, std::optional<Dtype>{Dtype::BF16},
                                     std::optional<Dtype>{Dtype::F32}}) {
    std::vector<std::byte> first;
    for (LoadMethod method : methods) {
      for (unsigned threads : {1u, 8u}) {
        LoadOptions options;
        options.dtype = dtype;
        options.method = method;
        options.threads = threads;
        const LoadedCheckpoint loaded = load(checkpoint_, options);
        const std::string what = "method " + std::to_string(static_cast<int>(method)) +
                                 " threads " + std::to_string(threads) + " dtype " +
                                 std::string(dtype ? dtype_name(*dtype) : "none");
        expect_loaded(loaded, dtype, what);
        // Padding is unspecified: compare tensor bytes only.
        std::vector<std::byte> packed;
        for (const LoadedTensor& t : loaded.tensors()) {
          const auto b = loaded.bytes(t);
          packed.insert(packed.end(), b.begin(), b.end());
        }
        if (first.empty()) first = packed;
        EXPECT_EQ(packed, first) << what;
      }
    }
  }
}

TEST_F(LoaderTest, ProgressReachesTheTotalAndNeverGoesBack) {
  for (unsigned threads : {1u, 8u}) {
    std::mutex mutex;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
    LoadOptions options;
    options.threads = threads;
    options.dtype = Dtype::BF16;
    options.progress = [&](std::uint64_t done, std::uint64_t total) {
      std::lock_guard lock(mutex);
      calls.emplace_back(done, total);
    };
    const LoadedCheckpoint loaded = load(checkpoint_, options);
    std::uint64_t total = 0;
    for (const LoadedTensor& t : loaded.tensors()) total += t.byte_count;
    ASSERT_FALSE(calls.empty());
    EXPECT_EQ(calls.back(), std::make_pair(total, total)) << threads << " threads";
    for (std::size_t i = 1; i < calls.size(); ++i) {
      EXPECT_LT(calls[i - 1].first, calls[i].first) << threads << " threads";
      EXPECT_EQ(calls[i].second, total);
    }
  }
}

TEST_F(LoaderTest, ErrorsFromWorkersReachTheCaller) {
  LoadOptions options;
  options.threads = 4;
  options.progress = [](std::uint64_t done, std::uint64_t) {
    if (done > 0) throw std::runtime_error("progress refused");
  };
  EXPECT_THROW((void)load(checkpoint_, options), std::runtime_error);

  // A file that shrank after it was opened: every buffered method reports the short read.
  fs::resize_file(path_, fs::file_size(path_) / 2);
  for (LoadMethod method : {LoadMethod::pread, LoadMethod::direct}) {
    LoadOptions shrunk;
    shrunk.threads = 4;
    shrunk.method = method;
    try {
      (void)load(checkpoint_, shrunk);
      ADD_FAILURE() << "no error for method " << static_cast<int>(method);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::io);
      EXPECT_NE(std::string(e.what()).find(path_.string()), std::string::npos) << e.what();
    }
  }
}

TEST(Loader, EmptySelectionLoadsNothing) {
  const fs::path path = test::unique_path("loader-empty");
  write_file(path, std::vector<TensorData>{});
  const Checkpoint checkpoint = Checkpoint::open(path);
  bool called = false;
  LoadOptions options;
  options.progress = [&](std::uint64_t done, std::uint64_t total) {
    called = true;
    EXPECT_EQ(done, 0u);
    EXPECT_EQ(total, 0u);
  };
  const LoadedCheckpoint loaded = load(checkpoint, options);
  EXPECT_TRUE(loaded.tensors().empty());
  EXPECT_EQ(loaded.buffer_size(), 0u);
  EXPECT_TRUE(called);
  fs::remove(path);
}

TEST(Loader, ShardedCheckpointLoadsAsOne) {
  const std::vector<Original> tensors = sample_tensors();
  const fs::path dir = test::unique_path("loader-sharded");
  fs::create_directories(dir);
  ShardOptions shard_options;
  shard_options.max_shard_size = 1 << 20;
  const auto written = write_sharded(dir, as_data(tensors), shard_options);
  ASSERT_GT(written.size(), 2u) << "expected several shards and an index";
  const Checkpoint checkpoint = Checkpoint::open(dir);
  ASSERT_GT(checkpoint.files().size(), 1u);
  for (LoadMethod method :
       {LoadMethod::pread, LoadMethod::mmap, LoadMethod::direct, LoadMethod::mapped}) {
    LoadOptions options;
    options.method = method;
    options.threads = 3;
    // A mapped load takes the tensors as stored.
    if (method != LoadMethod::mapped) options.dtype = Dtype::F16;
    const LoadedCheckpoint loaded = load(checkpoint, options);
    ASSERT_EQ(loaded.tensors().size(), tensors.size());
    for (const LoadedTensor& t : loaded.tensors()) {
      const Original& source = by_name(tensors, t.name);
      const auto expected = expected_bytes(source, t.dtype);
      const auto bytes = loaded.bytes(t);
      EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), expected.begin(), expected.end()))
          << t.name;
    }
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace safetensors
