// The library's CUDA device (src/device/cuda.cpp) on a machine without a GPU, through the
// stand-in runtime tests/fake_cuda/fake_cudart.cpp named by SAFETENSORS_CUDART: loads deliver
// the host loader's bytes through the real dlopen'd entry points, the device memory a
// CudaCheckpoint owns is freed with its last copy, errors name the call and the runtime's
// words, the caller's current device is left as it was, and the stand-in saw no misuse (a
// copy from pageable memory, a staging buffer reused before its copy ran, memory freed while
// in use).
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "device/cast_image.hpp"
#include "device/cuda.hpp"
#include "device_samples.hpp"
#include "expect_error.hpp"
#include "safetensors/device.hpp"
#include "safetensors/loader.hpp"
#include "safetensors/writer.hpp"
#include "test_files.hpp"

namespace safetensors {
namespace {

namespace fs = std::filesystem;

// Before main: the runtime and the driver are loaded once per process, on first use.
const bool fake_runtime_named = [] {
  ::setenv("SAFETENSORS_CUDART", FAKE_CUDART_PATH, 1);
  ::setenv("SAFETENSORS_CUDA_DRIVER", FAKE_CUDART_PATH, 1);
  ::setenv("SAFETENSORS_CUFILE", FAKE_CUDART_PATH, 1);
  return true;
}();

// The stand-in's own entry points, for the checks.
struct Fake {
  std::uint64_t (*violations)(char*, std::size_t) = nullptr;
  void (*live)(std::uint64_t*, std::uint64_t*) = nullptr;
  void (*fail_copy)(std::uint64_t) = nullptr;
  int (*set_device)(int) = nullptr;
  int (*get_device)(int*) = nullptr;
};

const Fake& fake() {
  static const Fake f = [] {
    void* library = ::dlopen(FAKE_CUDART_PATH, RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) throw std::runtime_error(::dlerror());
    Fake out;
    out.violations =
        reinterpret_cast<decltype(out.violations)>(::dlsym(library, "fake_cuda_violations"));
    out.live = reinterpret_cast<decltype(out.live)>(::dlsym(library, "fake_cuda_live"));
    out.fail_copy =
        reinterpret_cast<decltype(out.fail_copy)>(::dlsym(library, "fake_cuda_fail_copy"));
    out.set_device = reinterpret_cast<decltype(out.set_device)>(::dlsym(library, "cudaSetDevice"));
    out.get_device = reinterpret_cast<decltype(out.get_device)>(::dlsym(library, "cudaGetDevice"));
    return out;
  }();
  return f;
}

std::string violations() {
  std::string text(8192, '\0');
  const std::uint64_t count = fake().violations(text.data(), text.size());
  text.resize(std::strlen(text.c_str()));
  return count == 0 ? std::string() : std::to_string(count) + " violations:\n" + text;
}

std::uint64_t live_device_bytes() {
  std::uint64_t device = 0, pinned = 0;
  fake().live(&device, &pinned);
  return device;
}

class FakeCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = test::unique_path("fake-cuda");
    write_file(path_, test::sample_tensors(storage_));
    checkpoint_ = Checkpoint::open(path_);
  }
  void TearDown() override {
    EXPECT_EQ(violations(), "");
    std::error_code ignored;
    fs::remove(path_, ignored);
  }

  // The device's bytes of `loaded`, read back.
  static std::vector<std::byte> read_back(const CudaCheckpoint& loaded) {
    std::vector<std::byte> back(static_cast<std::size_t>(loaded.buffer_size()));
    detail::cuda_copy_to_host(detail::cuda_runtime(), back.data(), loaded.device_buffer(),
                              back.size());
    return back;
  }

  static void expect_host_bytes(const LoadedCheckpoint& host, const std::vector<std::byte>& got,
                                const std::string& what) {
    ASSERT_EQ(got.size(), host.buffer_size()) << what;
    for (const LoadedTensor& tensor : host.tensors()) {
      const auto want = host.bytes(tensor);
      EXPECT_TRUE(std::equal(want.begin(), want.end(), got.begin() + tensor.offset))
          << what << ": " << tensor.name;
    }
  }

  std::vector<std::vector<std::byte>> storage_;
  fs::path path_;
  Checkpoint checkpoint_;
};

TEST_F(FakeCudaTest, StatusNamesTheRuntimeItLoaded) {
  const CudaStatus status = cuda_status();
  EXPECT_TRUE(status.available) << status.reason;
  EXPECT_EQ(status.library, FAKE_CUDART_PATH);
  EXPECT_EQ(status.device_count, 2);
  EXPECT_EQ(status.runtime_version, 13000);
}

// Every dtype as stored and converted (on the host: the stand-in has no driver for the
// kernels), through rings from one small slot per thread to several threads and streams.
TEST_F(FakeCudaTest, LoadsMatchTheHostLoader) {
  struct Ring {
    unsigned threads, slots, streams;
    std::size_t slot_bytes;
  };
  for (const Ring ring : {Ring{1, 2, 1, 64 << 10}, Ring{2, 0, 2, 256 << 10}, Ring{3, 5, 3, 4096}}) {
    struct Cast {
      std::optional<Dtype> dtype;
      CastOn on;
    };
    for (const Cast cast :
         {Cast{std::nullopt, CastOn::automatic}, Cast{Dtype::BF16, CastOn::automatic},
          Cast{Dtype::F32, CastOn::automatic}, Cast{Dtype::F16, CastOn::automatic},
          Cast{Dtype::BF16, CastOn::device}, Cast{Dtype::F32, CastOn::host}}) {
      if (cast.on == CastOn::device && detail::device_cast_image_size == 0) continue;  // no kernels
      const std::optional<Dtype> dtype = cast.dtype;
      const std::string what = "threads " + std::to_string(ring.threads) + ", slot bytes " +
                               std::to_string(ring.slot_bytes) + ", dtype " +
                               (dtype ? std::string(dtype_name(*dtype)) : "as stored") +
                               (cast.on == CastOn::device ? " on the device"
                                : cast.on == CastOn::host ? " on the host"
                                                          : "");
      LoadOptions options;
      options.dtype = dtype;
      const LoadedCheckpoint host = load(checkpoint_, options);
      DeviceLoadOptions device_options;
      device_options.threads = ring.threads;
      device_options.slots = ring.slots;
      device_options.streams = ring.streams;
      device_options.slot_bytes = ring.slot_bytes;
      device_options.cast_on = cast.on;
      const CudaCheckpoint loaded = load_to_cuda(checkpoint_, options, 0, device_options);
      expect_host_bytes(host, read_back(loaded), what);
      // Widening and same-size casts run as the embedded kernels, through the stand-in
      // driver, wherever this build has kernels (nvcc found); the others on the host.
      EXPECT_EQ(loaded.stats().bytes_cast_on_device > 0,
                dtype.has_value() && cast.on != CastOn::host && detail::device_cast_image_size > 0)
          << what << ": " << loaded.stats().host_cast_reason;
      EXPECT_EQ(loaded.stats().bytes_copied - loaded.stats().bytes_staged_for_device_casts +
                    loaded.stats().bytes_cast_on_device + loaded.stats().bytes_read_direct,
                host.buffer_size())
          << what;
      if (loaded.stats().bytes_read_direct == 0) {
        EXPECT_FALSE(loaded.stats().direct_reason.empty()) << what;
      }
      EXPECT_EQ(violations(), "") << what;
    }
  }
}

// GPUDirect Storage through the stand-in's cuFile: asked for, the tensors loaded as stored go
// file to device and the converted ones through the ring, every handle deregistered while
// its descriptor is open; automatic does not use it where nvidia-fs is not loaded.
TEST_F(FakeCudaTest, DirectReadsGoFromTheFileToTheDevice) {
  const GdsStatus status = gds_status();
  EXPECT_TRUE(status.available) << status.reason;
  EXPECT_FALSE(status.compat_mode) << status.reason;
  EXPECT_EQ(status.library, FAKE_CUDART_PATH);
  for (const std::optional<Dtype> dtype :
       {std::optional<Dtype>{}, std::optional<Dtype>{Dtype::BF16}}) {
    LoadOptions options;
    options.dtype = dtype;
    const LoadedCheckpoint host = load(checkpoint_, options);
    DeviceLoadOptions device_options;
    device_options.threads = 2;
    device_options.slot_bytes = 64 << 10;
    device_options.direct = DirectReads::on;
    const CudaCheckpoint loaded = load_to_cuda(checkpoint_, options, 0, device_options);
    expect_host_bytes(host, read_back(loaded), dtype ? "BF16" : "as stored");
    const DeviceLoadStats& stats = loaded.stats();
    EXPECT_GT(stats.bytes_read_direct, 0u);
    EXPECT_EQ(stats.bytes_read_direct == host.buffer_size(), !dtype) << stats.direct_reason;
    EXPECT_EQ(stats.bytes_copied - stats.bytes_staged_for_device_casts +
                  stats.bytes_cast_on_device + stats.bytes_read_direct,
              host.buffer_size());
  }
  if (!fs::exists("/proc/driver/nvidia-fs")) {
    const CudaCheckpoint automatic = load_to_cuda(checkpoint_, LoadOptions{}, 0);
    EXPECT_EQ(automatic.stats().bytes_read_direct, 0u);
    EXPECT_NE(automatic.stats().direct_reason.find("nvidia-fs"), std::string::npos)
        << automatic.stats().direct_reason;
  }
}

// The allocation a CudaCheckpoint owns goes with its last copy; the pinned ring a load keeps
// goes with release_cuda_staging.
TEST_F(FakeCudaTest, DeviceMemoryIsFreedWithTheLastCopy) {
  (void)release_cuda_staging();
  const std::uint64_t before = live_device_bytes();
  std::optional<CudaCheckpoint> copy;
  {
    const CudaCheckpoint loaded = load_to_cuda(checkpoint_, LoadOptions{}, 1);
    EXPECT_EQ(loaded.device(), 1);
    EXPECT_GE(live_device_bytes(), before + loaded.buffer_size());
    copy = loaded;
  }
  EXPECT_GE(live_device_bytes(), before + copy->buffer_size());
  copy.reset();
  EXPECT_EQ(live_device_bytes(), before);
  EXPECT_GT(release_cuda_staging(), 0u);
  EXPECT_EQ(release_cuda_staging(), 0u);
}

// A load on another device switches back to the caller's device, also when it fails.
TEST_F(FakeCudaTest, TheCallersDeviceIsLeftAsItWas) {
  ASSERT_EQ(fake().set_device(1), 0);
  (void)load_to_cuda(checkpoint_, LoadOptions{}, 0);
  int device = -1;
  ASSERT_EQ(fake().get_device(&device), 0);
  EXPECT_EQ(device, 1);
  test::expect_error([&] { (void)load_to_cuda(checkpoint_, LoadOptions{}, 7); }, ErrorCode::device,
                     {"cudaSetDevice(7)", "invalid device ordinal"});
  ASSERT_EQ(fake().get_device(&device), 0);
  EXPECT_EQ(device, 1);
  ASSERT_EQ(fake().set_device(0), 0);
}

// A copy the runtime refuses stops the load with the call and the runtime's words, after the
// copies already queued; nothing stays allocated on the device.
TEST_F(FakeCudaTest, AFailedCopyStopsTheLoadAndFreesTheDeviceMemory) {
  const std::uint64_t before = live_device_bytes();
  DeviceLoadOptions device_options;
  device_options.threads = 2;
  device_options.slot_bytes = 64 << 10;
  fake().fail_copy(5);
  test::expect_error([&] { (void)load_to_cuda(checkpoint_, LoadOptions{}, 0, device_options); },
                     ErrorCode::device,
                     {"cudaMemcpyAsync", "unspecified launch failure", "CUDA error 719"});
  fake().fail_copy(0);
  EXPECT_EQ(live_device_bytes(), before);
  // The next load is not disturbed.
  const LoadedCheckpoint host = load(checkpoint_, LoadOptions{});
  const CudaCheckpoint loaded = load_to_cuda(checkpoint_, LoadOptions{}, 0, device_options);
  expect_host_bytes(host, read_back(loaded), "after a failed load");
}

}  // namespace
}  // namespace safetensors
