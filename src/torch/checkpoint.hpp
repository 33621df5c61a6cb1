// Reading a PyTorch checkpoint (zip or legacy format) into tensor references without
// running any code. Private to the library; convert.cpp turns the result into safetensors.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/storage_bytes.hpp"
#include "safetensors/dtype.hpp"
#include "safetensors/source.hpp"

namespace safetensors::detail::torch {

/// One storage record: its dtype (from the storage class, or the rebuild call's dtype for
/// an UntypedStorage) and its size in bytes.
struct Storage {
  std::string key;
  Dtype dtype = Dtype::U8;
  std::uint64_t byte_size = 0;
};

/// A tensor as a view of a storage; offset and strides in elements, all checked so the
/// furthest element lies inside the storage.
struct TensorRef {
  std::string name;  // dotted path in the state dict, e.g. "encoder.layer.0.weight"
  std::string storage_key;
  Dtype dtype = Dtype::F32;
  std::uint64_t storage_offset = 0;
  std::vector<std::uint64_t> shape;
  std::vector<std::uint64_t> stride;
};

enum class Format : std::uint8_t { zip, legacy };

/// What torch.save wrote: the tensors as views of storages, and how to read a storage.
struct SavedModel {
  Format format = Format::zip;
  std::vector<TensorRef> tensors;
  std::map<std::string, Storage> storages;
  /// Values that are not tensors (epoch, optimizer state...), with a note each.
  std::vector<std::string> dropped;
  /// A whole storage's bytes (little-endian): a view when the source is mapped and the
  /// record stored, else a copy read anew on each call. Zip records are CRC checked.
  std::function<detail::StorageBytes(const Storage&)> read_storage;
};

struct ReadOptions {
  /// Key holding the weights in a training checkpoint; empty = `state_dict` when present,
  /// else the top-level dict itself.
  std::string state_dict_key;
};

/// Reads a checkpoint from `source` (kept alive by the caller while `read_storage` is used).
/// Throws Error: forbidden_pickle, invalid_pickle, invalid_archive, invalid_checkpoint
/// (geometry), unsupported_checkpoint (quantized, sparse, TorchScript), each naming the
/// source and the tensor, global or opcode involved.
[[nodiscard]] SavedModel read_checkpoint(const Source& source, const ReadOptions& options = {});

}  // namespace safetensors::detail::torch
