// Writing a planned conversion: tensors produced from storages one storage at a time, every
// tensor read back from the temporary file and compared with its source storage before the
// file atomically appears. Private to convert.cpp.
#pragma once

#include <cstdint>
#include <filesystem>

#include "convert_plan.hpp"
#include "safetensors/convert.hpp"

namespace safetensors::detail {

/// Writes `plan` to `output` and returns the file size. Peak memory: the storage cache's
/// budget (max(128 MiB, largest storage)) plus two 8 MiB chunks. Each storage is read once
/// when the writer's order lets the cache keep it until its last use. On any error the
/// temporary file is removed and `output` is untouched.
std::uint64_t write_verified(const ConvertPlan& plan, const std::filesystem::path& output,
                             const ConvertOptions& options);

}  // namespace safetensors::detail
