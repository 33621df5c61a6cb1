// Interpreting an unpickled torch checkpoint: which dict holds the weights, which values
// are tensor rebuild calls and which persistent ids name storages. Nothing here reads
// storage bytes; torch/checkpoint.cpp checks geometry against the records. Private.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pickle/unpickler.hpp"
#include "torch/types.hpp"

namespace safetensors::detail::torch {

/// One `('storage', class, key, location, numel[, view_metadata])` persistent id.
struct StorageId {
  std::string key;
  StorageClass storage;
  std::uint64_t numel = 0;  // elements of the class (bytes for UntypedStorage)
  /// Legacy storage views: the part of the root storage this id stands for, in elements.
  std::uint64_t view_offset = 0;
  std::optional<std::uint64_t> view_size;
};

/// A tensor rebuild call, unchecked: numbers as the pickle gave them.
struct TensorCall {
  std::string name;
  pickle::ValueId storage = 0;  // a persistent_id value
  std::int64_t offset = 0;
  std::vector<std::int64_t> size;
  std::vector<std::int64_t> stride;
  std::optional<TorchDtype> dtype;  // _rebuild_tensor_v3 only
};

struct Graph {
  std::map<pickle::ValueId, StorageId> storages;  // every persistent id in the pickle
  std::vector<TensorCall> tensors;                // the selected state dict's tensors
  std::vector<std::string> dropped;
};

/// Reads the persistent ids (5-tuples in zip archives, 6-tuples in the legacy format) and
/// the state dict selected by `state_dict_key` (empty: `state_dict` when present, else the
/// top level). Throws Error naming `origin` and the key or tensor involved.
[[nodiscard]] Graph interpret(const pickle::Pickle& pickle, bool legacy,
                              std::string_view state_dict_key, std::string_view origin);

}  // namespace safetensors::detail::torch
