// What a conversion will write, decided before any tensor byte is copied: the output
// tensors as views of source "storages" (torch storages, or whole numpy arrays), the
// deduplicated names and the metadata. Private to convert.cpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/storage_bytes.hpp"
#include "safetensors/dtype.hpp"
#include "safetensors/header.hpp"
#include "safetensors/source.hpp"

namespace safetensors::detail {

/// One output tensor: a strided view (in elements) of a storage's bytes.
struct ConvertItem {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<std::uint64_t> shape;
  std::vector<std::uint64_t> stride;
  std::string storage;
  std::uint64_t offset = 0;  // elements
  std::uint64_t bytes = 0;   // of the output tensor
  bool contiguous = true;    // a plain byte range of the storage
};

struct ConvertPlan {
  std::string origin;        // the input, for messages
  std::string input_format;  // "torch-zip", "torch-legacy", "npy", "npz"
  std::vector<ConvertItem> items;
  std::map<std::string, std::uint64_t> storage_bytes;
  /// One storage's bytes, viewed in a mapped source or read anew (the converter decides
  /// what to keep).
  std::function<StorageBytes(const std::string& storage)> load;
  Metadata metadata;
  std::vector<std::pair<std::string, std::string>> deduplicated;  // removed -> kept
  std::vector<std::string> dropped;
};

/// Detects the format of `source` from its bytes and plans the conversion. `stem` names the
/// one tensor of a .npy file. `source` must outlive the plan's `load`.
[[nodiscard]] ConvertPlan plan_conversion(const Source& source, const std::string& stem,
                                          const std::string& state_dict_key);

/// The element size in bytes of a whole-byte dtype.
[[nodiscard]] std::uint64_t element_size(Dtype dtype) noexcept;

}  // namespace safetensors::detail
