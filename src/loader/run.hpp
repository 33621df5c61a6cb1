// Running a load: pieces of tensors handed to worker threads, progress and errors gathered.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "io/bulk_reader.hpp"
#include "safetensors/dtype.hpp"
#include "safetensors/loader.hpp"

namespace safetensors::detail {

/// A byte range of one tensor in its shard and where its (converted) bytes go. Converted
/// pieces hold whole elements.
struct LoadPiece {
  std::size_t shard = 0;
  Dtype from = Dtype::U8;
  Dtype to = Dtype::U8;
  std::uint64_t offset = 0;  // in the file
  std::uint64_t length = 0;  // source bytes
  std::byte* dest = nullptr;
  std::uint64_t dest_length = 0;
};

struct LoadJob {
  std::vector<std::unique_ptr<BulkReader>> shards;
  /// In file order; consecutive pieces [item_begin[i], item_begin[i + 1]) form one work item.
  std::vector<LoadPiece> pieces;
  std::vector<std::size_t> item_begin;
  LoadMethod method = LoadMethod::pread;  // never automatic
  unsigned threads = 1;
  std::uint64_t total_bytes = 0;  // destination bytes, for progress
  /// Every byte the pieces write: its pages are faulted in ahead of the copies, on a thread
  /// of its own (see run_load).
  std::span<std::byte> destination;
  std::function<void(std::uint64_t, std::uint64_t)> progress;
};

/// Runs every work item on `job.threads` threads (the caller's included). The first error
/// thrown by any worker stops the others and is rethrown here.
void run_load(const LoadJob& job);

/// The job load_into would run for `buffer` (whose addresses only become pieces' `dest`, so
/// it may be memory another device owns): for pipelines that deliver elsewhere (src/device/).
/// Checks the plan against the checkpoint as load_into does. `open_direct`: each shard also
/// gets an O_DIRECT descriptor whatever the method (BulkReader::direct_descriptor), for
/// GPUDirect Storage.
LoadJob make_load_job(const Checkpoint& checkpoint, const LoadPlan& plan,
                      std::span<std::byte> buffer, const LoadOptions& options,
                      bool open_direct = false);

}  // namespace safetensors::detail
