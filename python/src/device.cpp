// Loading into device memory from Python: the CUDA path (`_core.cuda_status`,
// `Checkpoint.load_to_cuda`, into memory torch allocated) and the emulated device the tests
// run the same pipeline against (`Checkpoint._load_to_emulated_device`).
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "device/cuda.hpp"
#include "device/emulated.hpp"
#include "device/gds.hpp"
#include "device/pipeline.hpp"
#include "safetensors/device.hpp"
#include "signals.hpp"

namespace safetensors::python {

namespace {

py::dict stats_dict(const DeviceLoadStats& stats) {
  py::dict out;
  out["bytes_read"] = stats.bytes_read;
  out["bytes_copied"] = stats.bytes_copied;
  out["copies"] = stats.copies;
  out["casts"] = stats.casts;
  out["bytes_cast_on_device"] = stats.bytes_cast_on_device;
  out["bytes_staged_for_device_casts"] = stats.bytes_staged_for_device_casts;
  out["bytes_cast_on_host"] = stats.bytes_cast_on_host;
  out["device_staging_bytes"] = stats.device_staging_bytes;
  out["host_cast_reason"] = stats.host_cast_reason;
  out["pinned_bytes"] = stats.pinned_bytes;
  out["threads"] = stats.threads;
  out["slots"] = stats.slots;
  out["seconds"] = stats.seconds;
  out["read_seconds"] = stats.read_seconds;
  out["slot_wait_seconds"] = stats.slot_wait_seconds;
  out["drain_seconds"] = stats.drain_seconds;
  out["pinned_reused"] = stats.pinned_reused;
  out["pinned_alloc_seconds"] = stats.pinned_alloc_seconds;
  out["bytes_read_direct"] = stats.bytes_read_direct;
  out["direct_reads"] = stats.direct_reads;
  out["direct_reason"] = stats.direct_reason;
  return out;
}

}  // namespace

DeviceLoadOptions device_load_options(unsigned threads, std::size_t slot_bytes, unsigned slots,
                                      std::size_t max_pinned_bytes, unsigned streams,
                                      bool keep_pinned, const std::string& cast_on,
                                      const std::string& direct) {
  DeviceLoadOptions options;
  if (direct == "auto") {
    options.direct = DirectReads::automatic;
  } else if (direct == "off") {
    options.direct = DirectReads::off;
  } else if (direct == "on") {
    options.direct = DirectReads::on;
  } else {
    raise(PyExc_ValueError, "direct must be \"auto\", \"off\" or \"on\", not \"" + direct + "\"");
  }
  if (cast_on == "auto") {
    options.cast_on = CastOn::automatic;
  } else if (cast_on == "host") {
    options.cast_on = CastOn::host;
  } else if (cast_on == "device") {
    options.cast_on = CastOn::device;
  } else {
    raise(PyExc_ValueError,
          "cast_on must be \"auto\", \"host\" or \"device\", not \"" + cast_on + "\"");
  }
  options.threads = threads;
  options.keep_pinned = keep_pinned;
  if (slot_bytes != 0) options.slot_bytes = slot_bytes;
  options.slots = slots;
  if (max_pinned_bytes != 0) options.max_pinned_bytes = max_pinned_bytes;
  if (streams != 0) options.streams = streams;
  options.progress = [](std::uint64_t, std::uint64_t) { check_signals(); };
  return options;
}

namespace {

// The device memory of `buffer`, an object with the CUDA array interface (a torch CUDA tensor):
// its address and size come from the object, never from numbers a caller passes, and it must
// be writable, one-dimensional, contiguous and of one-byte elements.
std::pair<void*, std::uint64_t> cuda_bytes(py::handle buffer) {
  const auto refuse = [](const std::string& why) {
    raise(PyExc_TypeError,
          "load_to_cuda: the buffer must be a writable, contiguous, "
          "one-dimensional uint8 CUDA array (__cuda_array_interface__): " +
              why);
  };
  if (!py::hasattr(buffer, "__cuda_array_interface__")) refuse("it has no CUDA array interface");
  const py::dict interface = buffer.attr("__cuda_array_interface__");
  const py::tuple data = interface["data"];
  const py::tuple shape = interface["shape"];
  if (py::cast<std::string>(interface["typestr"]).substr(1) != "u1") refuse("not bytes");
  if (shape.size() != 1) refuse("not one-dimensional");
  if (interface.contains("strides") && !interface["strides"].is_none() &&
      py::cast<py::tuple>(interface["strides"]).size() == 1 &&
      py::cast<std::int64_t>(interface["strides"][py::int_(0)]) != 1) {
    refuse("not contiguous");
  }
  if (py::cast<bool>(data[1])) refuse("read-only");
  return {reinterpret_cast<void*>(py::cast<std::uintptr_t>(data[0])),
          py::cast<std::uint64_t>(shape[0])};
}

}  // namespace

py::dict load_to_cuda_binding(const Checkpoint& checkpoint, const LoadPlan& plan, py::handle buffer,
                              int device, const DeviceLoadOptions& options) {
  const auto [pointer, size] = cuda_bytes(buffer);
  DeviceLoadStats stats;
  {
    // `buffer` is held by the caller's frame for the whole call.
    py::gil_scoped_release release;
    stats = load_to_cuda(checkpoint, plan, pointer, size, device, options);
  }
  return stats_dict(stats);
}

py::tuple load_to_emulated_binding(const Checkpoint& checkpoint, const LoadPlan& plan,
                                   const DeviceLoadOptions& options, unsigned copy_delay_us,
                                   unsigned seed, bool skip_slot_wait, bool device_casts,
                                   bool cast_before_copy, bool device_direct_reads,
                                   bool refuse_direct_files, bool direct_read_twice) {
  detail::EmulatedDevice::Options emulator;
  emulator.copy_delay = std::chrono::microseconds(copy_delay_us);
  emulator.seed = seed;
  emulator.casts = device_casts;
  emulator.direct_reads = device_direct_reads;
  emulator.refuse_direct_files = refuse_direct_files;
  detail::PipelineFaults faults;
  faults.skip_slot_wait = skip_slot_wait;
  faults.cast_before_copy = cast_before_copy;
  faults.direct_read_twice = direct_read_twice;
  detail::EmulatedDevice device(emulator);
  std::byte* memory = device.allocate(static_cast<std::size_t>(plan.buffer_size));
  DeviceLoadStats stats;
  detail::EmulatedDevice::Report report;
  std::uint64_t kept = 0;
  try {
    py::gil_scoped_release release;
    stats = detail::run_device_load(device, checkpoint, plan, memory, plan.buffer_size, options,
                                    faults);
    // The load's kept ring goes with this device; freed first, so that pinned_live shows
    // anything else left allocated.
    kept = detail::release_pinned_staging(device);
    report = device.check();
  } catch (...) {
    device.free(memory);
    throw;
  }
  py::bytes bytes(reinterpret_cast<const char*>(memory),
                  static_cast<std::size_t>(plan.buffer_size));
  device.free(memory);
  py::dict checks;
  checks["ok"] = report.ok();
  checks["copies"] = report.copies;
  checks["bytes_copied"] = report.bytes_copied;
  checks["casts"] = report.casts;
  checks["bytes_cast"] = report.bytes_cast;
  checks["direct_reads"] = report.direct_reads;
  checks["bytes_read_direct"] = report.bytes_read_direct;
  checks["pinned_high_water"] = report.pinned_high_water;
  checks["pinned_live"] = report.pinned_live;
  checks["pinned_kept"] = kept;
  checks["pinned_allocations"] = report.pinned_allocations;
  checks["violation_count"] = report.violation_count;
  checks["violations"] = report.violations;
  return py::make_tuple(bytes, checks, stats_dict(stats));
}

void register_device(py::module_& module) {
  module.def(
      "cuda_status",
      [](const std::vector<std::string>& candidates) {
        detail::add_cuda_runtime_candidates(candidates);
        const CudaStatus status = cuda_status();
        py::dict out;
        out["available"] = status.available;
        out["reason"] = status.reason;
        out["library"] = status.library;
        out["device_count"] = status.device_count;
        out["runtime_version"] = status.runtime_version;
        out["driver_version"] = status.driver_version;
        return out;
      },
      py::arg("candidates") = std::vector<std::string>{},
      "Whether the CUDA path can be used, and why not: loads the CUDA runtime (libraries in "
      "`candidates` are tried first) and asks it for devices.");
  module.def(
      "gds_status",
      [](const std::vector<std::string>& candidates) {
        detail::add_cufile_candidates(candidates);
        const GdsStatus status = gds_status();
        py::dict out;
        out["available"] = status.available;
        out["compat_mode"] = status.compat_mode;
        out["reason"] = status.reason;
        out["library"] = status.library;
        return out;
      },
      py::arg("candidates") = std::vector<std::string>{},
      "Whether GPUDirect Storage (cuFile) can be used, and why not: loads libcufile "
      "(SAFETENSORS_CUFILE, else the libraries in `candidates`, libcufile.so.0, libcufile.so) "
      "and opens its driver. `compat_mode`: cuFile would read through the host, so automatic "
      "loads do not use it.");
  module.def(
      "add_cufile_candidates",
      [](const std::vector<std::string>& candidates) { detail::add_cufile_candidates(candidates); },
      py::arg("candidates"),
      "Libraries the device path tries for cuFile before the default names (loads nothing).");
  module.def(
      "release_cuda_staging",
      [] {
        py::gil_scoped_release release;
        return release_cuda_staging();
      },
      "Frees the pinned staging memory CUDA loads keep for the next load; returns the bytes "
      "freed (0 when none was kept).");
}

}  // namespace safetensors::python
