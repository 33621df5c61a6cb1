// The device pipeline against the emulated device: the bytes it delivers are the host
// loader's, bit for bit, for every dtype, cast, subset, shard layout, read method and ring
// shape; the emulator's checks hold, and they fail when the ring is broken on purpose. The
// CUDA device is tested where a CUDA runtime and a GPU are found, and otherwise must say why.
#include "safetensors/device.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "device/cast_image.hpp"
#include "device/cuda.hpp"
#include "device/device_cast.hpp"
#include "device/emulated.hpp"
#include "device/gds.hpp"
#include "device/pinned_cache.hpp"
#include "device/pipeline.hpp"
#include "device_samples.hpp"
#include "expect_error.hpp"
#include "safetensors/cast.hpp"
#include "safetensors/error.hpp"
#include "safetensors/loader.hpp"
#include "safetensors/writer.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

namespace fs = std::filesystem;
using detail::EmulatedDevice;
using test::random_bytes;
using test::sample_tensors;

struct EmulatedLoad {
  std::vector<std::byte> bytes;
  EmulatedDevice::Report report;  // after the kept pinned memory was released
  DeviceLoadStats stats;
  std::uint64_t kept = 0;  // pinned bytes the load kept for the next one
};

// Plans with `options`, loads through the emulated device, returns the device's bytes.
EmulatedLoad load_emulated(const Checkpoint& checkpoint, const LoadOptions& options,
                           const DeviceLoadOptions& device_options,
                           EmulatedDevice::Options emulator = {},
                           detail::PipelineFaults faults = {}) {
  EmulatedDevice device(emulator);
  const LoadPlan plan = plan_load(checkpoint, options);
  std::byte* memory = device.allocate(static_cast<std::size_t>(plan.buffer_size));
  EmulatedLoad out;
  out.stats = detail::run_device_load(device, checkpoint, plan, memory, plan.buffer_size,
                                      device_options, faults);
  out.kept = detail::release_pinned_staging(device);
  out.report = device.check();
  out.bytes.assign(memory, memory + plan.buffer_size);
  device.free(memory);
  return out;
}

// Whether `device` (a plan's buffer) holds the host loader's tensors at their offsets.
bool same_as_host(const std::byte* device, const LoadedCheckpoint& host) {
  for (const LoadedTensor& tensor : host.tensors()) {
    const auto want = host.bytes(tensor);
    if (!std::equal(want.begin(), want.end(), device + tensor.offset)) return false;
  }
  return true;
}

std::string violations(const EmulatedDevice::Report& report) {
  std::string out;
  for (const std::string& v : report.violations) out += "\n  " + v;
  return out;
}

// Every tensor of `host` has the same bytes at its offset in `got`, and the emulator saw
// nothing wrong.
void expect_host_bytes(const LoadedCheckpoint& host, const EmulatedLoad& got,
                       const std::string& what) {
  ASSERT_EQ(got.bytes.size(), host.buffer_size()) << what;
  for (const LoadedTensor& tensor : host.tensors()) {
    const auto want = host.bytes(tensor);
    EXPECT_TRUE(std::equal(want.begin(), want.end(), got.bytes.begin() + tensor.offset))
        << what << ": " << tensor.name;
  }
  EXPECT_TRUE(got.report.ok()) << what << violations(got.report);
}

class DeviceLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = test::unique_path("device");
    write_file(path_, sample_tensors(storage_));
    checkpoint_ = Checkpoint::open(path_);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove(path_, ignored);
  }

  // Loads through the emulator and expects the host loader's bytes and a clean report.
  void expect_same_as_host(const LoadOptions& options, const DeviceLoadOptions& device_options,
                           EmulatedDevice::Options emulator, const std::string& what) {
    const LoadedCheckpoint host = load(checkpoint_, options);
    const EmulatedLoad got = load_emulated(checkpoint_, options, device_options, emulator);
    expect_host_bytes(host, got, what);
    EXPECT_EQ(got.report.pinned_live, 0u) << what;
    EXPECT_EQ(got.kept, device_options.keep_pinned ? got.stats.pinned_bytes : 0u) << what;
    EXPECT_EQ(got.report.pinned_allocations, 1u) << what;
    EXPECT_FALSE(got.stats.pinned_reused) << what;
    EXPECT_LE(got.report.pinned_high_water, got.stats.pinned_bytes) << what;
    EXPECT_LE(got.stats.pinned_bytes, device_options.max_pinned_bytes) << what;
    EXPECT_EQ(got.stats.bytes_copied - got.stats.bytes_staged_for_device_casts +
                  got.stats.bytes_cast_on_device + got.stats.bytes_read_direct,
              host.buffer_size())
        << what;
    EXPECT_EQ(got.report.bytes_read_direct, got.stats.bytes_read_direct) << what;
    EXPECT_EQ(got.report.direct_reads, got.stats.direct_reads) << what;
    // Direct reads only where the emulator allows them; else the ring says why not.
    if (!emulator.direct_reads || device_options.direct == DirectReads::off) {
      EXPECT_EQ(got.stats.bytes_read_direct, 0u) << what;
    }
    EXPECT_EQ(got.report.bytes_copied, got.stats.bytes_copied) << what;
    EXPECT_EQ(got.report.bytes_cast, got.stats.bytes_cast_on_device) << what;
    EXPECT_EQ(got.report.casts, got.stats.casts) << what;
  }

  std::vector<std::vector<std::byte>> storage_;
  fs::path path_;
  Checkpoint checkpoint_;
};

// Ring shapes from the tightest (two small slots, one thread) to several threads, slots and
// streams with slow copies that interleave at random.
std::vector<std::pair<DeviceLoadOptions, EmulatedDevice::Options>> ring_shapes() {
  std::vector<std::pair<DeviceLoadOptions, EmulatedDevice::Options>> shapes;
  DeviceLoadOptions tight;
  tight.threads = 1;
  tight.slots = 2;
  tight.slot_bytes = 64 << 10;
  shapes.push_back({tight, {}});
  DeviceLoadOptions standard;
  standard.threads = 2;
  shapes.push_back({standard, {}});
  DeviceLoadOptions many;
  many.threads = 3;
  many.slots = 5;
  many.slot_bytes = 256 << 10;
  many.streams = 3;
  EmulatedDevice::Options slow;
  slow.copy_delay = std::chrono::microseconds(200);
  slow.seed = 7;
  shapes.push_back({many, slow});
  return shapes;
}

TEST_F(DeviceLoadTest, StoredDtypesMatchTheHostLoader) {
  for (const auto& [device_options, emulator] : ring_shapes()) {
    expect_same_as_host({}, device_options, emulator,
                        "threads " + std::to_string(device_options.threads) + " slots " +
                            std::to_string(device_options.slots));
  }
}

TEST_F(DeviceLoadTest, CastsMatchTheHostLoader) {
  for (const Dtype to : {Dtype::BF16, Dtype::F16, Dtype::F32}) {
    LoadOptions options;
    options.dtype = to;
    for (const auto& [device_options, emulator] : ring_shapes()) {
      expect_same_as_host(options, device_options, emulator,
                          "to " + std::string(dtype_name(to)) + ", threads " +
                              std::to_string(device_options.threads));
    }
  }
}

TEST_F(DeviceLoadTest, SubsetsMatchTheHostLoader) {
  LoadOptions options;
  options.names = {"double", "scalar"};
  options.pattern = "layers.1*";
  options.dtype = Dtype::BF16;
  const LoadPlan plan = plan_load(checkpoint_, options);
  ASSERT_EQ(plan.tensors.size(), 5u);
  expect_same_as_host(options, ring_shapes()[0].first, {}, "subset");
  expect_same_as_host(options, ring_shapes()[2].first, ring_shapes()[2].second, "subset, slow");
}

TEST_F(DeviceLoadTest, EveryReadMethodMatches) {
  for (const LoadMethod method : {LoadMethod::pread, LoadMethod::mmap, LoadMethod::direct}) {
    for (const std::optional<Dtype> dtype : {std::optional<Dtype>{}, std::optional{Dtype::BF16}}) {
      LoadOptions options;
      options.dtype = dtype;
      DeviceLoadOptions device_options = ring_shapes()[2].first;
      device_options.method = method;
      expect_same_as_host(options, device_options, {},
                          "method " + std::to_string(static_cast<int>(method)));
    }
  }
}

TEST_F(DeviceLoadTest, ShardedCheckpointsMatch) {
  const fs::path directory = test::unique_path("device-shards");
  fs::create_directories(directory);
  ShardOptions shard_options;
  shard_options.max_shard_size = 1 << 20;
  const std::vector<TensorData> tensors = sample_tensors(storage_);
  const std::vector<fs::path> written = write_sharded(directory, tensors, shard_options);
  ASSERT_GT(written.size(), 3u);
  const Checkpoint sharded = Checkpoint::open(directory);
  LoadOptions options;
  options.dtype = Dtype::F32;
  const LoadedCheckpoint host = load(sharded, options);
  const EmulatedLoad got =
      load_emulated(sharded, options, ring_shapes()[2].first, ring_shapes()[2].second);
  ASSERT_EQ(got.bytes.size(), host.buffer_size());
  const auto all = host.bytes(host.tensors().front());
  EXPECT_EQ(
      std::memcmp(got.bytes.data(), all.data() - host.tensors().front().offset, got.bytes.size()),
      0);
  EXPECT_TRUE(got.report.ok()) << violations(got.report);
  std::error_code ignored;
  fs::remove_all(directory, ignored);
}

// Pinned memory stays within the bound whatever the checkpoint's size.
TEST_F(DeviceLoadTest, PinnedMemoryIsBounded) {
  DeviceLoadOptions options;
  options.threads = 2;
  options.max_pinned_bytes = 256 << 10;
  options.slot_bytes = 1 << 20;  // more than the bound allows: slots shrink to fit
  const EmulatedLoad got = load_emulated(checkpoint_, {}, options);
  EXPECT_TRUE(got.report.ok()) << violations(got.report);
  EXPECT_LE(got.report.pinned_high_water, 256u << 10);
  EXPECT_GE(got.stats.slots, 2u);
  EXPECT_GT(got.stats.copies, checkpoint_.total_bytes() / (256 << 10));
}

TEST_F(DeviceLoadTest, ProgressReachesTheTotal) {
  DeviceLoadOptions options;
  options.threads = 2;
  std::atomic<std::uint64_t> last{0}, total{0};
  options.progress = [&](std::uint64_t done, std::uint64_t all) {
    last = done;
    total = all;
  };
  const EmulatedLoad got = load_emulated(checkpoint_, {}, options);
  EXPECT_EQ(last.load(), got.bytes.size());
  EXPECT_EQ(total.load(), got.bytes.size());
}

TEST_F(DeviceLoadTest, StatsSayWhatHappened) {
  DeviceLoadOptions options = ring_shapes()[0].first;
  options.cast_on = CastOn::host;
  LoadOptions plan_options;
  plan_options.dtype = Dtype::BF16;
  const EmulatedLoad got = load_emulated(checkpoint_, plan_options, options);
  std::uint64_t stored = 0;
  for (const CheckpointTensor& t : checkpoint_.tensors()) stored += t.info->byte_count();
  EXPECT_EQ(got.stats.bytes_read, stored);
  EXPECT_EQ(got.stats.bytes_copied, got.bytes.size());
  EXPECT_LT(got.stats.bytes_copied, stored);  // F32 halved on the way
  EXPECT_EQ(got.stats.threads, 1u);
  EXPECT_EQ(got.stats.slots, 2u);
  EXPECT_EQ(got.stats.pinned_bytes, 2u * (64 << 10));
  EXPECT_GT(got.stats.seconds, 0.0);
  EXPECT_EQ(got.stats.bytes_cast_on_device, 0u);
  EXPECT_EQ(got.stats.device_staging_bytes, 0u);
  EXPECT_GT(got.stats.bytes_cast_on_host, 0u);
  EXPECT_NE(got.stats.host_cast_reason.find("CastOn::host"), std::string::npos);
}

// Every conversion the device casts, for every 8-bit float source too, from a file whose
// tensors sit at odd offsets, span several slots and have odd element counts.
class DeviceCastTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = test::unique_path("device-cast");
    const std::vector<std::pair<Dtype, std::uint64_t>> specs = {
        {Dtype::U8, 3},           {Dtype::F32, 70001},   {Dtype::U8, 1},
        {Dtype::F16, 100003},     {Dtype::BF16, 99999},  {Dtype::F8_E4M3, 150001},
        {Dtype::F8_E5M2, 4097},   {Dtype::F8_E8M0, 257}, {Dtype::F8_E4M3FNUZ, 77777},
        {Dtype::F8_E5M2FNUZ, 31}, {Dtype::F16, 1},       {Dtype::F32, 3},
    };
    std::vector<TensorData> tensors;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const auto [dtype, count] = specs[i];
      // Random bits: every F8 code, NaNs with payloads, subnormals, infinities.
      const std::vector<std::uint64_t> shape = {count};
      storage_.push_back(random_bytes(byte_size(dtype, shape).bytes, 100 + unsigned(i)));
      // The file sorts by name: the numbers keep this order, so offsets are odd.
      const std::string name = "t" + std::to_string(10 + i) + "." + std::string(dtype_name(dtype));
      tensors.push_back(TensorData::from_bytes(name, dtype, shape, storage_.back()));
    }
    write_file(path_, tensors);
    checkpoint_ = Checkpoint::open(path_);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove(path_, ignored);
  }

  std::vector<std::vector<std::byte>> storage_;
  fs::path path_;
  Checkpoint checkpoint_;
};

TEST_F(DeviceCastTest, EveryPairMatchesTheHostLoader) {
  for (const Dtype to : {Dtype::F32, Dtype::F16, Dtype::BF16}) {
    LoadOptions options;
    options.dtype = to;
    const LoadedCheckpoint host = load(checkpoint_, options);
    for (auto [device_options, emulator] : ring_shapes()) {
      device_options.cast_on = CastOn::device;
      const std::string what = "to " + std::string(dtype_name(to)) + ", threads " +
                               std::to_string(device_options.threads);
      const EmulatedLoad got = load_emulated(checkpoint_, options, device_options, emulator);
      expect_host_bytes(host, got, what);
      EXPECT_EQ(got.stats.bytes_cast_on_host, 0u) << what;
      EXPECT_GT(got.stats.bytes_cast_on_device, 0u) << what;
      EXPECT_GT(got.stats.casts, 0u) << what;
      EXPECT_EQ(got.report.casts, got.stats.casts) << what;
      EXPECT_EQ(got.report.bytes_cast, got.stats.bytes_cast_on_device) << what;
      EXPECT_EQ(got.stats.device_staging_bytes, got.stats.pinned_bytes) << what;
      EXPECT_EQ(got.stats.bytes_copied - got.stats.bytes_staged_for_device_casts +
                    got.stats.bytes_cast_on_device,
                host.buffer_size())
          << what;
      EXPECT_TRUE(got.stats.host_cast_reason.empty()) << what;
    }
  }
}

// The kernels' element operations against the CPU cast directly, over every 16-bit code and
// every 8-bit code.
TEST(DeviceCastOps, MatchTheCpuCastOnEveryCode) {
  std::vector<std::byte> codes(2 * 65536);
  for (unsigned i = 0; i < 65536; ++i) {
    codes[2 * i] = static_cast<std::byte>(i & 0xFF);
    codes[2 * i + 1] = static_cast<std::byte>(i >> 8);
  }
  const std::vector<std::byte> f32 = random_bytes(4 * 65536, 9);
  const std::vector<std::pair<Dtype, std::span<const std::byte>>> sources = {
      {Dtype::F32, f32},
      {Dtype::F16, codes},
      {Dtype::BF16, codes},
      {Dtype::F8_E4M3, std::span(codes).first(256 * 2)},
      {Dtype::F8_E5M2, std::span(codes).first(256 * 2)},
      {Dtype::F8_E8M0, std::span(codes).first(256 * 2)},
      {Dtype::F8_E4M3FNUZ, std::span(codes).first(256 * 2)},
      {Dtype::F8_E5M2FNUZ, std::span(codes).first(256 * 2)},
  };
  int pairs = 0;
  for (const auto& [from, in] : sources) {
    for (const Dtype to : {Dtype::F32, Dtype::F16, Dtype::BF16}) {
      if (from == to) continue;
      const std::size_t count = in.size() / (dtype_bits(from) / 8);
      std::vector<std::byte> want(count * dtype_bits(to) / 8), got(want.size());
      cast(from, in, to, want);
      detail::run_device_cast_on_host(from, in.data(), to, got.data(), count);
      EXPECT_TRUE(want == got) << dtype_name(from) << " to " << dtype_name(to);
      ++pairs;
    }
  }
  EXPECT_EQ(pairs, 6 + 5 * 3);
}

// Automatic: widening and same-size casts on the device (it can), narrowing ones on the host,
// where they shrink what crosses the bus.
TEST_F(DeviceCastTest, AutomaticCastsWideningOnTheDeviceAndNarrowingOnTheHost) {
  LoadOptions options;
  options.dtype = Dtype::F32;
  const EmulatedLoad widening = load_emulated(checkpoint_, options, ring_shapes()[1].first);
  EXPECT_TRUE(widening.report.ok()) << violations(widening.report);
  EXPECT_GT(widening.stats.bytes_cast_on_device, 0u);
  EXPECT_EQ(widening.stats.bytes_cast_on_host, 0u);

  options.dtype = Dtype::BF16;  // F32 sources narrow, the others widen or keep their size
  const EmulatedLoad mixed = load_emulated(checkpoint_, options, ring_shapes()[1].first);
  EXPECT_TRUE(mixed.report.ok()) << violations(mixed.report);
  EXPECT_GT(mixed.stats.bytes_cast_on_device, 0u);
  EXPECT_GT(mixed.stats.bytes_cast_on_host, 0u);
  EXPECT_NE(mixed.stats.host_cast_reason.find("narrowing cast (F32 to BF16)"), std::string::npos)
      << mixed.stats.host_cast_reason;
}

// A device that cannot cast: automatic falls back to the host and says why; asking for the
// device fails, saying why.
TEST_F(DeviceCastTest, FallsBackToTheHostWhenTheDeviceCannotCast) {
  LoadOptions options;
  options.dtype = Dtype::F16;
  const LoadedCheckpoint host = load(checkpoint_, options);
  EmulatedDevice::Options no_casts;
  no_casts.casts = false;
  const EmulatedLoad got = load_emulated(checkpoint_, options, ring_shapes()[2].first, no_casts);
  EXPECT_TRUE(got.report.ok()) << violations(got.report);
  ASSERT_EQ(got.bytes.size(), host.buffer_size());
  const auto all = host.bytes(host.tensors().front());
  EXPECT_EQ(
      std::memcmp(got.bytes.data(), all.data() - host.tensors().front().offset, got.bytes.size()),
      0);
  EXPECT_EQ(got.stats.bytes_cast_on_device, 0u);
  EXPECT_EQ(got.stats.device_staging_bytes, 0u);
  EXPECT_GT(got.stats.bytes_cast_on_host, 0u);
  EXPECT_NE(got.stats.host_cast_reason.find("without casts"), std::string::npos)
      << got.stats.host_cast_reason;

  DeviceLoadOptions device_options;
  device_options.cast_on = CastOn::device;
  test::expect_error([&] { (void)load_emulated(checkpoint_, options, device_options, no_casts); },
                     ErrorCode::device, {"without casts"});
}

// No device memory left for the casts' staging region (the tensors took the GPU, or a
// framework's cache holds the rest): automatic casts on the host instead and says why; asking
// for the device fails with cudaMalloc's error.
TEST_F(DeviceCastTest, FallsBackToTheHostWhenNoDeviceMemoryIsLeftForStaging) {
  LoadOptions options;
  options.dtype = Dtype::F32;  // widening: on the device when it can
  const LoadedCheckpoint host = load(checkpoint_, options);
  EmulatedDevice::Options full;
  full.device_memory = host.buffer_size();  // the tensors, and not a byte more
  const EmulatedLoad got = load_emulated(checkpoint_, options, ring_shapes()[1].first, full);
  EXPECT_TRUE(got.report.ok()) << violations(got.report);
  EXPECT_TRUE(same_as_host(got.bytes.data(), host));
  EXPECT_EQ(got.stats.bytes_cast_on_device, 0u);
  EXPECT_EQ(got.stats.device_staging_bytes, 0u);
  EXPECT_GT(got.stats.bytes_cast_on_host, 0u);
  EXPECT_NE(got.stats.host_cast_reason.find("no device memory was left"), std::string::npos)
      << got.stats.host_cast_reason;
  EXPECT_NE(got.stats.host_cast_reason.find("out of memory"), std::string::npos)
      << got.stats.host_cast_reason;

  DeviceLoadOptions device_options = ring_shapes()[1].first;
  device_options.cast_on = CastOn::device;
  test::expect_error([&] { (void)load_emulated(checkpoint_, options, device_options, full); },
                     ErrorCode::device, {"out of memory"});
}

// A destination not aligned to its element (a caller's odd device pointer) is converted on
// the host, as kernels cannot store there, and the load says so.
TEST_F(DeviceCastTest, AnUnalignedDestinationIsCastOnTheHost) {
  LoadOptions options;
  options.dtype = Dtype::F32;
  const LoadedCheckpoint host = load(checkpoint_, options);
  const LoadPlan plan = plan_load(checkpoint_, options);
  EmulatedDevice device;
  std::byte* memory = device.allocate(static_cast<std::size_t>(plan.buffer_size) + 1);
  DeviceLoadOptions device_options;
  device_options.threads = 2;
  const DeviceLoadStats stats = detail::run_device_load(device, checkpoint_, plan, memory + 1,
                                                        plan.buffer_size, device_options);
  const EmulatedDevice::Report report = device.check();
  // Only the byte before the destination is never written.
  EXPECT_EQ(report.violation_count, 1u) << violations(report);
  EXPECT_NE(violations(report).find("1 bytes never written, the first at offset 0"),
            std::string::npos)
      << violations(report);
  const auto all = host.bytes(host.tensors().front());
  EXPECT_EQ(std::memcmp(memory + 1, all.data() - host.tensors().front().offset, plan.buffer_size),
            0);
  EXPECT_EQ(stats.bytes_cast_on_device, 0u);
  EXPECT_GT(stats.bytes_cast_on_host, 0u);
  EXPECT_NE(stats.host_cast_reason.find("not aligned"), std::string::npos)
      << stats.host_cast_reason;
  device.free(memory);
}

// The negative tests of the casts' order: a kernel queued before its staging copy, or on
// another stream than it, is caught.
TEST_F(DeviceCastTest, TheEmulatorCatchesACastBeforeItsCopy) {
  LoadOptions options;
  options.dtype = Dtype::F32;
  DeviceLoadOptions device_options = ring_shapes()[0].first;
  device_options.cast_on = CastOn::device;
  detail::PipelineFaults faults;
  faults.cast_before_copy = true;
  const EmulatedLoad got = load_emulated(checkpoint_, options, device_options, {}, faults);
  ASSERT_FALSE(got.report.ok());
  EXPECT_NE(violations(got.report).find("queued before the copy"), std::string::npos)
      << violations(got.report);
}

TEST_F(DeviceCastTest, TheEmulatorCatchesACastOnAnotherStream) {
  LoadOptions options;
  options.dtype = Dtype::F32;
  DeviceLoadOptions device_options = ring_shapes()[0].first;
  device_options.cast_on = CastOn::device;
  device_options.streams = 2;
  device_options.slots = 4;
  EmulatedDevice::Options slow;
  slow.copy_delay = std::chrono::microseconds(2000);
  detail::PipelineFaults faults;
  faults.cast_on_other_stream = true;
  const EmulatedLoad got = load_emulated(checkpoint_, options, device_options, slow, faults);
  ASSERT_FALSE(got.report.ok());
  EXPECT_NE(violations(got.report).find("another stream"), std::string::npos)
      << violations(got.report);
}

// With nvcc the build embeds a fatbin holding the kernels (their names are in it as strings);
// without, the image is empty and says why.
TEST(DeviceCastImage, HoldsTheKernelsWhenBuiltWithNvcc) {
  if (detail::device_cast_image_size == 0) {
    EXPECT_NE(std::string(detail::device_cast_image_missing).find("without"), std::string::npos);
    GTEST_SKIP() << "no kernels embedded: " << detail::device_cast_image_missing;
  }
  EXPECT_STREQ(detail::device_cast_image_missing, "");
  const std::string_view image(reinterpret_cast<const char*>(detail::device_cast_image_bytes),
                               detail::device_cast_image_size);
  // A fatbin starts with its magic number 0xBA55ED50, little-endian.
  ASSERT_GE(image.size(), 4u);
  EXPECT_EQ(image.substr(0, 4), std::string_view("\x50\xED\x55\xBA", 4));
  for (const char* name : detail::device_cast_kernel_names) {
    EXPECT_NE(image.find(name), std::string_view::npos) << name;
  }
}

// The emulator's checks of casts, each shown to fire.
TEST(EmulatedDevice, ChecksCasts) {
  EmulatedDevice device;
  std::byte* staging = device.allocate(64);
  std::byte* out = device.allocate(64);
  std::byte* pinned = device.allocate_pinned(64);
  std::memset(pinned, 0, 64);
  const detail::DeviceStream stream = device.create_stream();
  device.copy_async(staging, pinned, 16, stream);
  device.cast_async(Dtype::F32, staging, Dtype::F16, out, 4, stream);            // fine
  device.cast_async(Dtype::F32, staging, Dtype::F16, out + 8, 4, stream);        // read twice
  device.cast_async(Dtype::F32, staging + 16, Dtype::F16, out + 16, 4, stream);  // unwritten
  device.cast_async(Dtype::F32, staging + 2, Dtype::F16, out + 24, 1, stream);   // misaligned
  device.synchronize(stream);
  device.destroy_stream(stream);
  const std::string text = violations(device.check());
  EXPECT_NE(text.find("cast 2 reads device bytes [0, 16) whose copy an earlier cast already read"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("cast 3 reads device bytes [16, 32) that no copy wrote"), std::string::npos)
      << text;
  EXPECT_NE(text.find("cast 4 (F32 to F16, 1 elements): a side is not aligned"), std::string::npos)
      << text;
  device.free(staging);
  device.free(out);
  device.free_pinned(pinned);
}

// The negative test: a ring that refills a slot without waiting for its copies is caught.
TEST_F(DeviceLoadTest, TheEmulatorCatchesABrokenRing) {
  EmulatedDevice::Options slow;
  slow.copy_delay = std::chrono::microseconds(2000);
  detail::PipelineFaults faults;
  faults.skip_slot_wait = true;
  const EmulatedLoad got = load_emulated(checkpoint_, {}, ring_shapes()[0].first, slow, faults);
  ASSERT_FALSE(got.report.ok());
  EXPECT_NE(violations(got.report).find("still queued"), std::string::npos)
      << violations(got.report);
}

// A device error in the middle stops every worker, and the pinned memory is kept for the next
// load (or freed) only after the copies already queued have run.
TEST_F(DeviceLoadTest, ADeviceErrorStopsTheLoadCleanly) {
  EmulatedDevice::Options failing;
  failing.fail_copy = 5;
  // Slow enough that copies 1-4 are still queued when copy 5 fails: the ring must wait for
  // them before it is kept (or freed).
  failing.copy_delay = std::chrono::microseconds(2000);
  EmulatedDevice device(failing);
  const LoadPlan plan = plan_load(checkpoint_, {});
  std::byte* memory = device.allocate(static_cast<std::size_t>(plan.buffer_size));
  DeviceLoadOptions options = ring_shapes()[2].first;
  try {
    (void)detail::run_device_load(device, checkpoint_, plan, memory, plan.buffer_size, options);
    ADD_FAILURE() << "no error";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::device);
    EXPECT_NE(std::string(error.what()).find("copy 5 refused"), std::string::npos) << error.what();
  }
  // The ring is kept as after any load; the emulator saw nothing freed or rewritten under a
  // queued copy. The next load reuses it and delivers every byte.
  device.free(memory);
  const EmulatedDevice::Report failed = device.check();
  EXPECT_TRUE(failed.ok()) << violations(failed);
  EXPECT_EQ(failed.pinned_allocations, 1u);
  EXPECT_EQ(failed.pinned_frees, 0u);
  EXPECT_EQ(device.pinned_cache()->kept_bytes(), failed.pinned_live);
  EXPECT_GT(failed.pinned_live, 0u);

  const LoadedCheckpoint host = load(checkpoint_, {});
  memory = device.allocate(static_cast<std::size_t>(plan.buffer_size));
  const DeviceLoadStats again =
      detail::run_device_load(device, checkpoint_, plan, memory, plan.buffer_size, options);
  EXPECT_TRUE(again.pinned_reused);
  EXPECT_TRUE(same_as_host(memory, host));
  EXPECT_TRUE(device.check().ok()) << violations(device.check());
  device.free(memory);
  EXPECT_EQ(detail::release_pinned_staging(device), failed.pinned_live);
  const EmulatedDevice::Report report = device.check();
  EXPECT_TRUE(report.ok()) << violations(report);
  EXPECT_EQ(report.pinned_allocations, 1u);
  EXPECT_EQ(report.pinned_live, 0u);
  EXPECT_EQ(report.device_live, 0u);
}

// Pinned memory kept between loads (issue 13): one allocation for a series of loads, a new
// one only when a load needs a larger ring, none kept when asked not to or once released.
TEST_F(DeviceLoadTest, TheNextLoadReusesThePinnedRing) {
  EmulatedDevice device;
  const LoadedCheckpoint host = load(checkpoint_, {});
  const LoadPlan plan = plan_load(checkpoint_, {});
  const auto load_once = [&](const DeviceLoadOptions& options) {
    std::byte* memory = device.allocate(static_cast<std::size_t>(plan.buffer_size));
    const DeviceLoadStats stats =
        detail::run_device_load(device, checkpoint_, plan, memory, plan.buffer_size, options);
    EXPECT_TRUE(same_as_host(memory, host));
    device.free(memory);
    return stats;
  };
  DeviceLoadOptions small = ring_shapes()[0].first;  // 2 slots of 64 KiB
  const DeviceLoadStats first = load_once(small);
  EXPECT_FALSE(first.pinned_reused);
  EXPECT_GE(first.pinned_alloc_seconds, 0.0);
  const DeviceLoadStats second = load_once(small);
  EXPECT_TRUE(second.pinned_reused);
  EXPECT_EQ(second.pinned_alloc_seconds, 0.0);
  EmulatedDevice::Report report = device.check();
  EXPECT_EQ(report.pinned_allocations, 1u);
  EXPECT_EQ(report.pinned_live, first.pinned_bytes);

  // A larger ring: the kept block is freed before the new one is pinned (never both at once),
  // and the larger one is kept.
  DeviceLoadOptions large = ring_shapes()[2].first;  // 5 slots of 256 KiB
  const DeviceLoadStats third = load_once(large);
  EXPECT_FALSE(third.pinned_reused);
  report = device.check();
  EXPECT_EQ(report.pinned_allocations, 2u);
  EXPECT_EQ(report.pinned_frees, 1u);
  EXPECT_EQ(report.pinned_high_water, third.pinned_bytes);
  EXPECT_EQ(report.pinned_live, third.pinned_bytes);

  // A smaller ring fits in the kept block.
  EXPECT_TRUE(load_once(small).pinned_reused);
  EXPECT_EQ(device.check().pinned_allocations, 2u);

  // keep_pinned = false: the load may use the kept block, and frees it at the end.
  small.keep_pinned = false;
  EXPECT_TRUE(load_once(small).pinned_reused);
  report = device.check();
  EXPECT_EQ(report.pinned_live, 0u);
  EXPECT_EQ(detail::release_pinned_staging(device), 0u);
  EXPECT_FALSE(load_once(small).pinned_reused);
  EXPECT_EQ(device.check().pinned_live, 0u);

  // Kept again, then released.
  small.keep_pinned = true;
  EXPECT_FALSE(load_once(small).pinned_reused);
  EXPECT_EQ(device.check().pinned_live, first.pinned_bytes);
  EXPECT_EQ(detail::release_pinned_staging(device), first.pinned_bytes);
  report = device.check();
  EXPECT_EQ(report.pinned_live, 0u);
  EXPECT_EQ(report.pinned_allocations, 4u);
  EXPECT_EQ(report.pinned_frees, 4u);
  EXPECT_TRUE(report.ok()) << violations(report);

  // A block larger than a load's max_pinned_bytes is used by it but not kept after it.
  large.max_pinned_bytes = std::size_t{1} << 20;
  (void)load_once(large);  // 4 slots of 256 KiB fit, 1 MiB, kept
  DeviceLoadOptions bounded = small;
  bounded.max_pinned_bytes = 128 << 10;
  const std::size_t kept = device.pinned_cache()->kept_bytes();
  EXPECT_GT(kept, bounded.max_pinned_bytes);
  EXPECT_TRUE(load_once(bounded).pinned_reused);
  EXPECT_EQ(device.check().pinned_live, 0u);
}

// Loads from several threads at once on one device: each gets memory of its own (one the kept
// block, the others new), every byte arrives, and at most one block is kept afterwards.
TEST_F(DeviceLoadTest, ConcurrentLoadsShareTheKeptRingSafely) {
  EmulatedDevice::Options slow;
  slow.copy_delay = std::chrono::microseconds(100);
  EmulatedDevice device(slow);
  const LoadedCheckpoint host = load(checkpoint_, {});
  const LoadPlan plan = plan_load(checkpoint_, {});
  const DeviceLoadOptions options = ring_shapes()[2].first;
  constexpr int loaders = 3, rounds = 4;
  std::vector<std::byte*> memory(loaders);
  for (std::byte*& m : memory) m = device.allocate(static_cast<std::size_t>(plan.buffer_size));
  std::atomic<int> reused{0};
  std::atomic<std::uint64_t> ring{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < loaders; ++t) {
      threads.emplace_back([&, t] {
        for (int round = 0; round < rounds; ++round) {
          std::memset(memory[t], 0, plan.buffer_size);
          const DeviceLoadStats stats = detail::run_device_load(
              device, checkpoint_, plan, memory[t], plan.buffer_size, options);
          reused += stats.pinned_reused ? 1 : 0;
          ring = stats.pinned_bytes;
          EXPECT_TRUE(same_as_host(memory[t], host)) << "loader " << t << " round " << round;
        }
      });
    }
  }
  for (std::byte* m : memory) device.free(m);
  // Freed first: each allocation was written once per round, which the written-once check
  // of live allocations would report; the checks of every copy and staging write remain.
  const EmulatedDevice::Report report = device.check();
  EXPECT_TRUE(report.ok()) << violations(report);
  EXPECT_LE(report.pinned_high_water, std::uint64_t{loaders} * ring.load());
  EXPECT_EQ(report.pinned_live, ring.load());  // one block kept, whatever the interleaving
  EXPECT_EQ(report.pinned_allocations, report.pinned_frees + 1);
  EXPECT_LT(report.pinned_allocations, std::uint64_t{loaders} * rounds);
  EXPECT_GT(reused.load(), 0);
  EXPECT_EQ(detail::release_pinned_staging(device), ring.load());
}

TEST_F(DeviceLoadTest, ASmallDeviceBufferIsRefused) {
  EmulatedDevice device;
  const LoadPlan plan = plan_load(checkpoint_, {});
  std::byte* memory = device.allocate(16);
  EXPECT_THROW((void)detail::run_device_load(device, checkpoint_, plan, memory, 16, {}), Error);
  device.free(memory);
  EXPECT_TRUE(device.check().ok());
}

TEST_F(DeviceLoadTest, AnEmptySelectionCopiesNothing) {
  LoadOptions options;
  options.pattern = "nothing.matches";
  const EmulatedLoad got = load_emulated(checkpoint_, options, {});
  EXPECT_TRUE(got.bytes.empty());
  EXPECT_EQ(got.stats.copies, 0u);
  EXPECT_TRUE(got.report.ok()) << violations(got.report);
}

// The emulator's own checks, each shown to fire.
TEST(EmulatedDevice, ChecksCopies) {
  EmulatedDevice device;
  std::byte* memory = device.allocate(100);
  std::byte* pinned = device.allocate_pinned(100);
  std::vector<std::byte> pageable(100);
  const detail::DeviceStream stream = device.create_stream();
  device.copy_async(memory, pinned, 60, stream);
  device.copy_async(memory + 50, pinned, 50, stream);     // bytes 50..59 twice, 60..99 once
  device.copy_async(memory + 90, pinned, 20, stream);     // past the end
  device.copy_async(memory, pageable.data(), 1, stream);  // not pinned
  device.synchronize(stream);
  device.destroy_stream(stream);
  const EmulatedDevice::Report report = device.check();
  const std::string text = violations(report);
  EXPECT_NE(text.find("outside every device allocation"), std::string::npos) << text;
  EXPECT_NE(text.find("not pinned"), std::string::npos) << text;
  EXPECT_NE(text.find("written more than once, the first at offset 0"), std::string::npos) << text;
  device.free(memory);
  device.free_pinned(pinned);
}

TEST(EmulatedDevice, ChecksStagingAndFrees) {
  EmulatedDevice::Options slow;
  slow.copy_delay = std::chrono::microseconds(20000);
  EmulatedDevice device(slow);
  std::byte* memory = device.allocate(64);
  std::byte* pinned = device.allocate_pinned(64);
  const detail::DeviceStream stream = device.create_stream();
  const detail::DeviceEvent event = device.create_event();
  device.copy_async(memory, pinned, 32, stream);
  device.record(event, stream);
  device.staging_write(pinned + 16, 8);  // the copy has not run yet
  device.wait(event);
  device.staging_write(pinned + 16, 8);  // now it has: fine
  device.copy_async(memory + 32, pinned + 32, 32, stream);
  device.staging_kept(pinned, 64);  // kept for the next load under a queued copy
  device.free_pinned(pinned);       // freed under it
  device.synchronize(stream);
  device.destroy_stream(stream);
  device.destroy_event(event);
  const EmulatedDevice::Report report = device.check();
  EXPECT_EQ(report.violation_count, 3u) << violations(report);
  const std::string text = violations(report);
  EXPECT_NE(text.find("wrote staging bytes [16, 24) while copy 1"), std::string::npos) << text;
  EXPECT_NE(text.find("kept for the next load while copy 2"), std::string::npos) << text;
  EXPECT_NE(text.find("pinned memory freed while copy 2"), std::string::npos) << text;
  device.free(memory);
}

TEST(EmulatedDevice, EventsFollowTheirStream) {
  EmulatedDevice::Options slow;
  slow.copy_delay = std::chrono::microseconds(5000);
  EmulatedDevice device(slow);
  std::byte* memory = device.allocate(8);
  std::byte* pinned = device.allocate_pinned(8);
  std::memset(pinned, 0x5a, 8);
  const detail::DeviceStream stream = device.create_stream();
  const detail::DeviceEvent event = device.create_event();
  device.copy_async(memory, pinned, 8, stream);
  device.record(event, stream);
  device.wait(event);
  EXPECT_EQ(memory[7], std::byte{0x5a});  // the copy before the event is done
  device.destroy_stream(stream);
  device.destroy_event(event);
  EXPECT_TRUE(device.check().ok());
  device.free(memory);
  device.free_pinned(pinned);
}

TEST(RingShape, StaysWithinThePinnedBound) {
  DeviceLoadOptions options;
  options.max_pinned_bytes = std::size_t{256} << 20;
  const detail::RingShape big = detail::ring_shape(options, 16, std::uint64_t{8} << 30);
  EXPECT_LE(std::uint64_t{big.slots} * big.slot_bytes, options.max_pinned_bytes);
  EXPECT_GE(big.slots, 4u);
  const detail::RingShape small = detail::ring_shape(options, 16, 1000);
  EXPECT_LE(small.slots, 18u);  // one per worker and one more: no more than a load can fill
  options.max_pinned_bytes = 1;
  const detail::RingShape tiny = detail::ring_shape(options, 4, std::uint64_t{1} << 30);
  EXPECT_EQ(tiny.slots, 2u);
}

// CUDA: without a runtime or a device, every entry point says why; with them, a real load
// matches the host loader.
TEST_F(DeviceLoadTest, CudaPathSaysWhyOrWorks) {
  const CudaStatus status = cuda_status();
  if (!status.available) {
    EXPECT_FALSE(status.reason.empty());
    try {
      (void)load_to_cuda(checkpoint_, LoadOptions{}, 0);
      ADD_FAILURE() << "load_to_cuda did not throw";
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::device);
      const std::string what = error.what();
      EXPECT_NE(what.find("CUDA"), std::string::npos) << what;
    }
    GTEST_SKIP() << "CUDA path unavailable: " << status.reason;
  }
  struct Case {
    std::optional<Dtype> dtype;
    CastOn cast_on;
  };
  for (const Case c : {Case{std::nullopt, CastOn::automatic}, Case{Dtype::BF16, CastOn::host},
                       Case{Dtype::BF16, CastOn::automatic}, Case{Dtype::F32, CastOn::automatic},
                       Case{Dtype::F16, CastOn::automatic}}) {
    LoadOptions options;
    options.dtype = c.dtype;
    const LoadedCheckpoint host = load(checkpoint_, options);
    DeviceLoadOptions device_options;
    device_options.threads = 2;
    device_options.slot_bytes = 256 << 10;
    device_options.cast_on = c.cast_on;
    const CudaCheckpoint loaded = load_to_cuda(checkpoint_, options, 0, device_options);
    if (c.dtype && c.cast_on == CastOn::automatic) {
      // The kernels run where they were built in, unless the driver refused them (the reason
      // says so; a GPU check should not see that).
      EXPECT_EQ(loaded.stats().bytes_cast_on_device > 0,
                detail::device_cast_image_size > 0 && loaded.stats().host_cast_reason.empty())
          << loaded.stats().host_cast_reason;
    }
    std::vector<std::byte> back(static_cast<std::size_t>(loaded.buffer_size()));
    detail::cuda_copy_to_host(detail::cuda_runtime(), back.data(), loaded.device_buffer(),
                              back.size());
    ASSERT_EQ(back.size(), host.buffer_size());
    for (const LoadedTensor& tensor : host.tensors()) {
      const auto want = host.bytes(tensor);
      EXPECT_TRUE(std::equal(want.begin(), want.end(), back.begin() + tensor.offset))
          << tensor.name;
    }
  }
  // GPUDirect Storage where cuFile loads (compatibility mode included, as `on` accepts it);
  // elsewhere automatic goes through the ring and says why.
  const GdsStatus gds = gds_status();
  const LoadedCheckpoint host = load(checkpoint_, LoadOptions{});
  DeviceLoadOptions device_options;
  device_options.direct = gds.available ? DirectReads::on : DirectReads::automatic;
  const CudaCheckpoint loaded = load_to_cuda(checkpoint_, LoadOptions{}, 0, device_options);
  if (gds.available) {
    EXPECT_EQ(loaded.stats().bytes_read_direct, host.buffer_size()) << loaded.stats().direct_reason;
  } else {
    // Without nvidia-fs automatic loads do not even ask cuFile, and say so.
    const std::string& why = loaded.stats().direct_reason;
    EXPECT_EQ(loaded.stats().bytes_read_direct, 0u);
    EXPECT_TRUE(why == gds.reason || why.find("nvidia-fs") != std::string::npos) << why;
  }
  std::vector<std::byte> back(static_cast<std::size_t>(loaded.buffer_size()));
  detail::cuda_copy_to_host(detail::cuda_runtime(), back.data(), loaded.device_buffer(),
                            back.size());
  EXPECT_TRUE(same_as_host(back.data(), host)) << "direct reads: " << gds.reason;
}

// A library named by SAFETENSORS_CUDART that does not exist is named in the reason.
TEST(CudaStatus, NamesTheLibraryItTried) {
  if (!cuda_status().library.empty()) GTEST_SKIP() << "a CUDA runtime is already loaded";
  ::setenv("SAFETENSORS_CUDART", "/nonexistent/libcudart.so.99", 1);
  const CudaStatus status = cuda_status();
  ::unsetenv("SAFETENSORS_CUDART");
  EXPECT_FALSE(status.available);
  EXPECT_NE(status.reason.find("/nonexistent/libcudart.so.99"), std::string::npos) << status.reason;
}

// Direct reads (GPUDirect Storage's path, emulated by pread into device memory): every piece
// loaded as stored goes file to device, bit for bit the host loader's, for every dtype, ring
// shape, subset and read method; converting pieces still go through the ring.
EmulatedDevice::Options with_direct(EmulatedDevice::Options emulator) {
  emulator.direct_reads = true;
  return emulator;
}

TEST_F(DeviceLoadTest, DirectReadsMatchTheHostLoader) {
  for (auto [device_options, emulator] : ring_shapes()) {
    const std::string what = "direct, threads " + std::to_string(device_options.threads);
    expect_same_as_host({}, device_options, with_direct(emulator), what);
    const EmulatedLoad got = load_emulated(checkpoint_, {}, device_options, with_direct(emulator));
    const LoadedCheckpoint host = load(checkpoint_, LoadOptions{});
    // Everything was read directly: nothing staged, nothing copied.
    EXPECT_EQ(got.stats.bytes_read_direct, host.buffer_size()) << what;
    EXPECT_EQ(got.stats.bytes_copied, 0u) << what;
    EXPECT_EQ(got.report.copies, 0u) << what;
    EXPECT_GT(got.stats.direct_reads, 0u) << what;
    EXPECT_TRUE(got.stats.direct_reason.empty()) << got.stats.direct_reason;
  }
  for (const LoadMethod method : {LoadMethod::pread, LoadMethod::mmap, LoadMethod::direct}) {
    DeviceLoadOptions device_options;
    device_options.method = method;
    device_options.direct = DirectReads::on;
    expect_same_as_host({}, device_options, with_direct({}),
                        "direct, method " + std::to_string(static_cast<int>(method)));
  }
  LoadOptions subset;
  subset.names = {"double", "scalar", "mask"};
  subset.pattern = "layers.1*";
  expect_same_as_host(subset, ring_shapes()[2].first, with_direct(ring_shapes()[2].second),
                      "direct subset");
}

// A load that converts some tensors and not others: the converting ones go through the ring
// (cast on the host or the device), the rest directly, and together they are the host's.
TEST_F(DeviceLoadTest, MixedLoadsReadStoredPiecesDirectlyAndCastTheRest) {
  for (const CastOn cast_on : {CastOn::host, CastOn::automatic}) {
    LoadOptions options;
    options.dtype = Dtype::F32;  // F32 tensors stay as stored, the others convert
    DeviceLoadOptions device_options = ring_shapes()[2].first;
    device_options.cast_on = cast_on;
    const std::string what = "mixed, cast_on " + std::to_string(static_cast<int>(cast_on));
    expect_same_as_host(options, device_options, with_direct(ring_shapes()[2].second), what);
    const EmulatedLoad got = load_emulated(checkpoint_, options, device_options, with_direct({}));
    // The bytes of the tensors the plan leaves as stored (F32, and those it never casts).
    const LoadPlan as_stored = plan_load(checkpoint_, LoadOptions{});
    const LoadPlan converted = plan_load(checkpoint_, options);
    std::uint64_t stored = 0;
    for (const LoadedTensor& tensor : converted.tensors) {
      const auto same = std::find_if(as_stored.tensors.begin(), as_stored.tensors.end(),
                                     [&](const LoadedTensor& t) { return t.name == tensor.name; });
      ASSERT_NE(same, as_stored.tensors.end()) << tensor.name;
      if (same->dtype == tensor.dtype) stored += tensor.byte_count;
    }
    EXPECT_LT(stored, converted.buffer_size) << what;
    EXPECT_EQ(got.stats.bytes_read_direct, stored) << what;
    EXPECT_GT(got.stats.bytes_copied, 0u) << what;
    EXPECT_TRUE(got.stats.direct_reason.empty()) << got.stats.direct_reason;
  }
}

TEST_F(DeviceLoadTest, ShardedCheckpointsReadDirectly) {
  const fs::path directory = test::unique_path("device-direct-shards");
  fs::create_directories(directory);
  ShardOptions shard_options;
  shard_options.max_shard_size = 1 << 20;
  const std::vector<TensorData> tensors = sample_tensors(storage_);
  ASSERT_GT(write_sharded(directory, tensors, shard_options).size(), 3u);
  const Checkpoint sharded = Checkpoint::open(directory);
  for (const std::optional<Dtype> dtype : {std::optional<Dtype>{}, std::optional{Dtype::F32}}) {
    LoadOptions options;
    options.dtype = dtype;
    const LoadedCheckpoint host = load(sharded, options);
    const EmulatedLoad got = load_emulated(sharded, options, ring_shapes()[2].first,
                                           with_direct(ring_shapes()[2].second));
    ASSERT_EQ(got.bytes.size(), host.buffer_size());
    EXPECT_TRUE(same_as_host(got.bytes.data(), host));
    EXPECT_TRUE(got.report.ok()) << violations(got.report);
    EXPECT_GT(got.stats.bytes_read_direct, 0u);
  }
  std::error_code ignored;
  fs::remove_all(directory, ignored);
}

// Without the device's direct reads, automatic goes through the ring and says why; `on`
// refuses to load, saying why; a file the device refuses goes through the ring.
TEST_F(DeviceLoadTest, DirectReadsFallBackAndSayWhy) {
  const LoadedCheckpoint host = load(checkpoint_, LoadOptions{});
  DeviceLoadOptions device_options;
  const EmulatedLoad ring = load_emulated(checkpoint_, {}, device_options, {});
  EXPECT_TRUE(same_as_host(ring.bytes.data(), host));
  EXPECT_EQ(ring.stats.bytes_read_direct, 0u);
  EXPECT_NE(ring.stats.direct_reason.find("direct reads are off"), std::string::npos)
      << ring.stats.direct_reason;

  device_options.direct = DirectReads::off;
  const EmulatedLoad off = load_emulated(checkpoint_, {}, device_options, with_direct({}));
  EXPECT_TRUE(same_as_host(off.bytes.data(), host));
  EXPECT_EQ(off.stats.bytes_read_direct, 0u);
  EXPECT_NE(off.stats.direct_reason.find("DirectReads::off"), std::string::npos)
      << off.stats.direct_reason;

  device_options.direct = DirectReads::on;
  try {
    (void)load_emulated(checkpoint_, {}, device_options, {});
    ADD_FAILURE() << "direct = on loaded without direct reads";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::device);
    const std::string what = error.what();
    EXPECT_NE(what.find("GPUDirect Storage"), std::string::npos) << what;
    EXPECT_NE(what.find("direct reads are off"), std::string::npos) << what;
  }

  EmulatedDevice::Options refusing = with_direct({});
  refusing.refuse_direct_files = true;
  for (const DirectReads direct : {DirectReads::automatic, DirectReads::on}) {
    device_options.direct = direct;
    const EmulatedLoad refused = load_emulated(checkpoint_, {}, device_options, refusing);
    EXPECT_TRUE(same_as_host(refused.bytes.data(), host));
    EXPECT_TRUE(refused.report.ok()) << violations(refused.report);
    EXPECT_EQ(refused.stats.bytes_read_direct, 0u);
    EXPECT_EQ(refused.stats.bytes_copied, host.buffer_size());
    EXPECT_NE(refused.stats.direct_reason.find("refuses"), std::string::npos)
        << refused.stats.direct_reason;
    EXPECT_NE(refused.stats.direct_reason.find(path_.filename().string()), std::string::npos)
        << refused.stats.direct_reason;
  }
}

// The emulator catches direct reads written twice or out of place.
TEST_F(DeviceLoadTest, TheEmulatorCatchesBrokenDirectReads) {
  detail::PipelineFaults twice;
  twice.direct_read_twice = true;
  const EmulatedLoad doubled = load_emulated(checkpoint_, {}, {}, with_direct({}), twice);
  ASSERT_FALSE(doubled.report.ok());
  EXPECT_NE(violations(doubled.report).find("written more than once"), std::string::npos)
      << violations(doubled.report);

  detail::PipelineFaults shifted;
  shifted.direct_read_shift = 1;
  const EmulatedLoad moved = load_emulated(checkpoint_, {}, {}, with_direct({}), shifted);
  ASSERT_FALSE(moved.report.ok());
  const std::string found = violations(moved.report);
  EXPECT_NE(found.find("outside every device allocation"), std::string::npos) << found;
  EXPECT_NE(found.find(path_.filename().string()), std::string::npos) << found;
}

// Without libcufile (this machine has none unless SAFETENSORS_CUFILE names one), GDS is
// unavailable and says which libraries it tried; a named library that does not exist is named.
TEST(GdsStatus, SaysWhyItIsUnavailable) {
  if (gds_status().available) GTEST_SKIP() << "cuFile is available: " << gds_status().library;
  ::setenv("SAFETENSORS_CUFILE", "/nonexistent/libcufile.so.7", 1);
  const GdsStatus named = gds_status();
  ::unsetenv("SAFETENSORS_CUFILE");
  EXPECT_FALSE(named.available);
  EXPECT_NE(named.reason.find("/nonexistent/libcufile.so.7"), std::string::npos) << named.reason;
  EXPECT_NE(named.reason.find("SAFETENSORS_CUFILE"), std::string::npos) << named.reason;
  const GdsStatus status = gds_status();
  EXPECT_FALSE(status.available);
  EXPECT_NE(status.reason.find("libcufile.so.0"), std::string::npos) << status.reason;
  EXPECT_NE(status.reason.find("libcufile.so"), std::string::npos) << status.reason;
  EXPECT_TRUE(status.library.empty());
}

// A library that loads but is not cuFile: the missing entry point is named.
TEST(GdsStatus, NamesAMissingEntryPoint) {
  if (gds_status().available) GTEST_SKIP() << "cuFile is available: " << gds_status().library;
  ::setenv("SAFETENSORS_CUFILE", "libc.so.6", 1);
  const GdsStatus status = gds_status();
  ::unsetenv("SAFETENSORS_CUFILE");
  EXPECT_FALSE(status.available);
  EXPECT_NE(status.reason.find("lacks cuFileDriverOpen"), std::string::npos) << status.reason;
}

}  // namespace
}  // namespace safetensors
