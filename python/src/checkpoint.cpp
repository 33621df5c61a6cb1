// Sharded checkpoints and the parallel loader: `_core.Checkpoint` and `_core.LoadPlan`.
// Python allocates the load buffer (a torch or numpy array) so that the tensors returned are
// plain views of memory the framework owns; see libsafetensors/torch.py, load_checkpoint.
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "safetensors/checkpoint.hpp"
#include "safetensors/device.hpp"
#include "safetensors/device_map.hpp"
#include "safetensors/loader.hpp"
#include "safetensors/parallel.hpp"
#include "signals.hpp"

namespace safetensors::python {

// device.cpp: the device paths over an open checkpoint.
DeviceLoadOptions device_load_options(unsigned threads, std::size_t slot_bytes, unsigned slots,
                                      std::size_t max_pinned_bytes, unsigned streams,
                                      bool keep_pinned, const std::string& cast_on,
                                      const std::string& direct);
py::dict load_to_cuda_binding(const Checkpoint& checkpoint, const LoadPlan& plan, py::handle buffer,
                              int device, const DeviceLoadOptions& options);
py::tuple load_to_emulated_binding(const Checkpoint& checkpoint, const LoadPlan& plan,
                                   const DeviceLoadOptions& options, unsigned copy_delay_us,
                                   unsigned seed, bool skip_slot_wait, bool device_casts,
                                   bool cast_before_copy, bool device_direct_reads,
                                   bool refuse_direct_files, bool direct_read_twice);

namespace {

py::list shape_list(const std::vector<std::uint64_t>& shape) {
  py::list out;
  for (const std::uint64_t d : shape) out.append(d);
  return out;
}

Dtype parse_dtype(const std::string& name) {
  const std::optional<Dtype> dtype = dtype_from_name(name);
  if (!dtype) raise(safetensor_error(), "dtype " + name + " is not a safetensors dtype");
  return *dtype;
}

// `options` with Ctrl-C checked at each progress report (about 256 per load).
LoadOptions stop_on_signal(LoadOptions options) {
  options.progress = [](std::uint64_t, std::uint64_t) { check_signals(); };
  return options;
}

// Python's form of a tensor-parallel plan: [(pattern, style, dim, sizes)], rank, world size.
using PyRules =
    std::vector<std::tuple<std::string, std::string, std::int32_t, std::vector<std::uint64_t>>>;
// Python's form of a device map: ([(module, device, bytes)], [(device, bytes)]).
using PyDeviceMap = std::pair<std::vector<std::tuple<std::string, std::string, std::uint64_t>>,
                              std::vector<std::pair<std::string, std::uint64_t>>>;
using PySlices =
    std::map<std::string,
             std::pair<std::uint32_t, std::vector<std::pair<std::uint64_t, std::uint64_t>>>>;

std::shared_ptr<const TensorParallelOptions> tp_options(const PyRules& rules, std::uint32_t rank,
                                                        std::uint32_t world_size, bool strict) {
  auto options = std::make_shared<TensorParallelOptions>();
  for (const auto& [pattern, style, dim, sizes] : rules) {
    options->plan.push_back({pattern, style, dim, sizes});
  }
  options->rank = rank;
  options->world_size = world_size;
  options->strict = strict;
  return options;
}

PySlices py_slices(const std::map<std::string, TensorSlice, std::less<>>& slices) {
  PySlices out;
  for (const auto& [name, slice] : slices) {
    auto& [dim, ranges] = out[name];
    dim = slice.dim;
    for (const TensorSlice::Range& r : slice.ranges) ranges.emplace_back(r.begin, r.end);
  }
  return out;
}

class PyCheckpoint {
 public:
  PyCheckpoint(py::handle path_like, const std::string& backend) {
    const std::string path = fs_path(path_like);
    if (backend != "mmap" && backend != "pread") {
      raise(safetensor_error(), "backend " + backend + " is invalid: expected mmap or pread");
    }
    {
      py::gil_scoped_release release;
      checkpoint_ = Checkpoint::open(path, backend == "pread" ? Backend::pread : Backend::mmap);
    }
    // Every shard as safe_open sees a file: NUL in names or metadata is refused.
    for (const File& file : checkpoint_.files()) {
      reject_null_bytes(file, "Error while deserializing header: ");
    }
  }

  py::list keys() const {
    py::list out;
    for (const CheckpointTensor& t : checkpoint_.tensors()) out.append(t.info->name);
    return out;
  }

  py::list files() const {
    py::list out;
    for (const File& file : checkpoint_.files()) out.append(fs_name(file.name()));
    return out;
  }

  py::object metadata() const {
    const std::optional<Metadata>& metadata = checkpoint_.metadata();
    if (!metadata) return py::none();
    py::dict out;
    for (const auto& [key, value] : *metadata) out[py::str(key)] = py::str(value);
    return out;
  }

  py::object index_path() const {
    if (checkpoint_.index_path().empty()) return py::none();
    return fs_name(checkpoint_.index_path().native());
  }

  std::uint64_t total_size() const { return checkpoint_.total_bytes(); }
  std::optional<std::uint64_t> declared_total_size() const {
    return checkpoint_.declared_total_size();
  }
  std::size_t size() const { return checkpoint_.tensors().size(); }
  bool contains(const std::string& name) const { return checkpoint_.find(name) != nullptr; }

  /// (shard path, dtype name, shape) of a tensor.
  py::tuple info(const std::string& name) const {
    const CheckpointTensor& t = find(name);
    return py::make_tuple(fs_name(t.file->name()), std::string(dtype_name(t.info->dtype)),
                          shape_list(t.info->shape));
  }

  LoadPlan plan(const std::optional<std::string>& dtype, std::vector<std::string> names,
                std::string pattern, const PySlices& slices, const std::optional<PyRules>& tp_plan,
                std::uint32_t rank, std::uint32_t world_size, bool strict) const {
    LoadOptions options;
    if (dtype) options.dtype = parse_dtype(*dtype);
    options.names = std::move(names);
    options.pattern = std::move(pattern);
    for (const auto& [name, part] : slices) {
      TensorSlice& slice = options.slices[name];
      slice.dim = part.first;
      for (const auto& [begin, end] : part.second) slice.ranges.push_back({begin, end});
    }
    if (tp_plan) options.tensor_parallel = tp_options(*tp_plan, rank, world_size, strict);
    return plan_load(checkpoint_, options);
  }

  PySlices plan_tensor_parallel(const PyRules& rules, std::uint32_t rank, std::uint32_t world_size,
                                bool strict) const {
    return py_slices(safetensors::plan_tensor_parallel(
        checkpoint_, *tp_options(rules, rank, world_size, strict)));
  }

  /// plan_device_map (docs/PARALLEL.md) under budgets [(device, size)], sizes as the CLI's
  /// --max-memory takes them ("20GiB", "500MB", "123"); a bad size raises ValueError.
  PyDeviceMap plan_device_map(const std::vector<std::pair<std::string, std::string>>& budgets,
                              const std::vector<std::string>& no_split,
                              const std::optional<std::string>& dtype) const {
    DeviceMapOptions options;
    for (const auto& [device, size] : budgets) {
      try {
        options.max_memory.push_back({device, parse_size(size)});
      } catch (const Error& error) {
        throw py::value_error("max_memory[" + device + "]: " + error.what());
      }
    }
    options.no_split = no_split;
    if (dtype) options.dtype = parse_dtype(*dtype);
    DeviceMap map;
    {
      py::gil_scoped_release release;
      map = safetensors::plan_device_map(checkpoint_, options);
    }
    PyDeviceMap out;
    for (const DeviceAssignment& a : map.modules)
      out.first.emplace_back(a.module, a.device, a.bytes);
    for (const DeviceBudget& d : map.used) out.second.emplace_back(d.device, d.bytes);
    return out;
  }

  /// Bytes asked of each shard so far (Source::bytes_read), in files() order.
  std::vector<std::uint64_t> bytes_read() const {
    std::vector<std::uint64_t> out;
    for (const File& file : checkpoint_.files()) out.push_back(file.source().bytes_read());
    return out;
  }

  void load_into(const LoadPlan& plan, py::handle buffer, unsigned threads,
                 const std::optional<std::pair<std::uint64_t, std::uint64_t>>& buffer_range) const {
    const PinnedBuffer pinned = PinnedBuffer::writable(buffer, "load_into: the buffer");
    const std::span<std::byte> bytes = pinned.writable_bytes();
    LoadOptions options;
    options.threads = threads;
    options.buffer_range = buffer_range;
    // `pinned` keeps the buffer and the plan is only read, so the workers need no GIL.
    py::gil_scoped_release release;
    safetensors::load_into(checkpoint_, plan, bytes, stop_on_signal(options));
  }

  py::dict load_to_cuda(const LoadPlan& plan, py::handle buffer, int device, unsigned threads,
                        std::size_t slot_bytes, unsigned slots, std::size_t max_pinned_bytes,
                        unsigned streams, bool keep_pinned, const std::string& cast_on,
                        const std::string& direct) const {
    return load_to_cuda_binding(checkpoint_, plan, buffer, device,
                                device_load_options(threads, slot_bytes, slots, max_pinned_bytes,
                                                    streams, keep_pinned, cast_on, direct));
  }

  py::tuple load_to_emulated_device(const LoadPlan& plan, unsigned threads, std::size_t slot_bytes,
                                    unsigned slots, std::size_t max_pinned_bytes, unsigned streams,
                                    unsigned copy_delay_us, unsigned seed, bool skip_slot_wait,
                                    bool keep_pinned, const std::string& cast_on, bool device_casts,
                                    bool cast_before_copy, const std::string& direct,
                                    bool device_direct_reads, bool refuse_direct_files,
                                    bool direct_read_twice) const {
    return load_to_emulated_binding(
        checkpoint_, plan,
        device_load_options(threads, slot_bytes, slots, max_pinned_bytes, streams, keep_pinned,
                            cast_on, direct),
        copy_delay_us, seed, skip_slot_wait, device_casts, cast_before_copy, device_direct_reads,
        refuse_direct_files, direct_read_twice);
  }

 private:
  const CheckpointTensor& find(const std::string& name) const {
    const CheckpointTensor* t = checkpoint_.find(name);
    if (t == nullptr) raise(safetensor_error(), "Checkpoint does not contain tensor " + name);
    return *t;
  }

  Checkpoint checkpoint_;
};

py::list plan_tensors(const LoadPlan& plan) {
  py::list out;
  for (const LoadedTensor& t : plan.tensors) {
    out.append(py::make_tuple(t.name, std::string(dtype_name(t.dtype)), shape_list(t.shape),
                              t.offset, t.byte_count));
  }
  return out;
}

}  // namespace

void register_checkpoint(py::module_& module) {
  py::class_<LoadPlan>(module, "LoadPlan")
      .def_readonly("buffer_size", &LoadPlan::buffer_size)
      .def_property_readonly("tensors", &plan_tensors,
                             "(name, dtype, shape, offset, nbytes) per tensor, in name order.");

  py::class_<PyCheckpoint>(module, "Checkpoint")
      .def(py::init<py::handle, const std::string&>(), py::arg("path"), py::arg("backend") = "mmap",
           "Opens a directory, an index or a single file and checks that index and shards "
           "agree; the GIL is released meanwhile.")
      .def("keys", &PyCheckpoint::keys, "Tensor names, sorted.")
      .def("files", &PyCheckpoint::files, "Shard paths, in index order.")
      .def("metadata", &PyCheckpoint::metadata)
      .def_property_readonly("index_path", &PyCheckpoint::index_path)
      .def_property_readonly("total_size", &PyCheckpoint::total_size, "The tensors' bytes, summed.")
      .def_property_readonly("declared_total_size", &PyCheckpoint::declared_total_size,
                             "The index's metadata.total_size as written (None without one); "
                             "not checked: mlx-lm, for one, writes the shards' file sizes.")
      .def("__len__", &PyCheckpoint::size)
      .def("__contains__", &PyCheckpoint::contains)
      .def("info", &PyCheckpoint::info, "(shard path, dtype name, shape) of a tensor.")
      .def("plan", &PyCheckpoint::plan, py::arg("dtype") = py::none(),
           py::arg("names") = std::vector<std::string>{}, py::arg("pattern") = "",
           py::arg("slices") = PySlices{}, py::arg("tp_plan") = py::none(), py::arg("rank") = 0,
           py::arg("world_size") = 1, py::arg("strict") = false,
           "Lays out the selected tensors (converted to `dtype` where it applies) in one "
           "buffer. `slices` maps names to (dim, [(begin, end), ...]): only those parts are "
           "loaded; `tp_plan` [(pattern, style, dim, sizes)] adds each tensor's part for "
           "`rank` of `world_size` (docs/PARALLEL.md).")
      .def("plan_tensor_parallel", &PyCheckpoint::plan_tensor_parallel, py::arg("tp_plan"),
           py::arg("rank"), py::arg("world_size"), py::arg("strict") = false,
           "{name: (dim, [(begin, end), ...])}: each split tensor's part for `rank`; tensors "
           "absent are replicated. Raises before reading anything.")
      .def("_plan_device_map", &PyCheckpoint::plan_device_map, py::arg("max_memory"),
           py::arg("no_split") = std::vector<std::string>{}, py::arg("dtype") = py::none(),
           "([(module, device, bytes)], [(device, bytes)]): libsafetensors.plan_device_map's "
           "core; `max_memory` is [(device, size text)], `dtype` a safetensors dtype name.")
      .def("bytes_read", &PyCheckpoint::bytes_read,
           "Bytes read from each shard so far (files() order), by loads and header reads.")
      .def("load_into", &PyCheckpoint::load_into, py::arg("plan"), py::arg("buffer"),
           py::arg("threads") = 0, py::arg("buffer_range") = py::none(),
           "Fills a writable buffer of at least plan.buffer_size bytes (only bytes "
           "[begin, end) of it with `buffer_range`); the GIL is released.")
      .def("load_to_cuda", &PyCheckpoint::load_to_cuda, py::arg("plan"), py::arg("buffer"),
           py::arg("device"), py::arg("threads") = 0, py::arg("slot_bytes") = 0,
           py::arg("slots") = 0, py::arg("max_pinned_bytes") = 0, py::arg("streams") = 0,
           py::arg("keep_pinned") = true, py::arg("cast_on") = "auto", py::arg("direct") = "auto",
           "Loads into `buffer`, a uint8 CUDA tensor (anything with the CUDA array interface) "
           "of at least plan.buffer_size bytes on device `device`, through pinned staging "
           "buffers (kept for the next load unless keep_pinned=False; "
           "libsafetensors.release_cuda_staging() frees them); returns the load's statistics. "
           "`cast_on` says where dtype conversions run: \"auto\" (widening ones on the GPU when "
           "the kernels built in load there, narrowing ones on the host), \"host\" or "
           "\"device\" (or fail). `direct` says whether tensors loaded as stored are read from "
           "their files straight into GPU memory (GPUDirect Storage through cuFile): \"auto\" "
           "(when libsafetensors.gds_status() is available and not in compatibility mode), "
           "\"off\" or \"on\" (or fail); the statistics' direct_reason says why not. The GIL "
           "is released.")
      .def("_load_to_emulated_device", &PyCheckpoint::load_to_emulated_device, py::arg("plan"),
           py::arg("threads") = 0, py::arg("slot_bytes") = 0, py::arg("slots") = 0,
           py::arg("max_pinned_bytes") = 0, py::arg("streams") = 0, py::arg("copy_delay_us") = 0,
           py::arg("seed") = 1, py::arg("skip_slot_wait") = false, py::arg("keep_pinned") = true,
           py::arg("cast_on") = "auto", py::arg("device_casts") = true,
           py::arg("cast_before_copy") = false, py::arg("direct") = "auto",
           py::arg("device_direct_reads") = false, py::arg("refuse_direct_files") = false,
           py::arg("direct_read_twice") = false,
           "The device pipeline against the emulated device (for tests): (the device's bytes, "
           "the emulator's checks, the load's statistics). The emulated device is the call's "
           "own: the pinned memory the load kept is freed before the checks (pinned_kept). "
           "`device_casts=False` makes a device that cannot convert; `skip_slot_wait` and "
           "`cast_before_copy` break the pipeline's order on purpose. `device_direct_reads=True` "
           "makes a device that reads files into its memory directly (by pread, as GPUDirect "
           "Storage would by DMA), `refuse_direct_files` one that refuses every file, and "
           "`direct_read_twice` issues each direct read twice (the checks catch it).");
}

}  // namespace safetensors::python
