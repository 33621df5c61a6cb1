// Writing a planned conversion: tensors copied from storages one storage at a time, every
// tensor read back from the temporary file and compared with its source storage before the
// file atomically appears. Private to convert.cpp (and its tests).
#pragma once

#include <cstdint>
#include <filesystem>

#include "convert/plan.hpp"
#include "safetensors/convert.hpp"

namespace safetensors::detail {

/// Writes `plan` to `output` and returns the file size. Peak memory: the storage cache's
/// budget (max(128 MiB, largest storage)) plus an 8 MiB chunk for strided tensors and one per
/// verifying thread (at most four). Each storage is loaded once when the writer's order lets
/// the cache keep it until its last use. On any error the temporary file is removed and
/// `output` is untouched.
std::uint64_t write_verified(const ConvertPlan& plan, const std::filesystem::path& output,
                             const ConvertOptions& options);

}  // namespace safetensors::detail
