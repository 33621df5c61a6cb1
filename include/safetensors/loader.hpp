// Loading whole checkpoints (or subsets) into memory fast: parallel reads, optional dtype
// conversion while copying.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "safetensors/checkpoint.hpp"
#include "safetensors/export.hpp"

namespace safetensors {

/// How tensor bytes travel from the file into memory.
enum class LoadMethod : std::uint8_t {
  automatic,  // whichever measured faster on this machine class (documented in loader.cpp)
  pread,      // large aligned positional reads in parallel
  mmap,       // a mapping touched (copied from) in parallel
  direct,     // O_DIRECT reads that bypass the page cache (falls back to pread if refused)
  // No copy (load() only): each file mapped privately, copy-on-write, and every page of the
  // selected tensors read in before load() returns; the tensors are the page cache's pages.
  // Needs tensors loaded as stored, from files (a Source with a descriptor); load_into, which
  // fills caller memory, reads with pread instead.
  mapped,
};

/// A part of one tensor: along dimension `dim`, the index ranges [begin, end) taken in order
/// and concatenated (one range for a block of rows or columns; several for the interleaved
/// halves of a fused weight). Every dimension is kept; `dim` shrinks to the ranges' total.
/// The loader reads only the bytes of the part: one request per contiguous run of the file
/// (a block of whole rows is one run, a block of columns one run per row).
struct SAFETENSORS_API TensorSlice {
  struct Range {
    std::uint64_t begin = 0;
    std::uint64_t end = 0;
    friend bool operator==(const Range&, const Range&) = default;
  };
  std::uint32_t dim = 0;
  std::vector<Range> ranges;

  /// The elements along `dim` (the sum of the ranges' lengths).
  std::uint64_t length() const noexcept {
    std::uint64_t n = 0;
    for (const Range& r : ranges) n += r.end - r.begin;
    return n;
  }
};

struct TensorParallelOptions;  // parallel.hpp

struct SAFETENSORS_API LoadOptions {
  /// Worker threads; 0 = hardware concurrency.
  unsigned threads = 0;
  /// Convert floating-point tensors to this dtype while copying (see cast.hpp); tensors of
  /// other dtypes are loaded unchanged.
  std::optional<Dtype> dtype;
  /// Load only these names (all when both `names` and `pattern` are empty).
  std::vector<std::string> names;
  /// Load only names matching this glob (`*`, `?`), e.g. "model.layers.0.*".
  std::string pattern;
  LoadMethod method = LoadMethod::automatic;
  /// Load only a part of these tensors (name to slice); every name must be selected. Tensors
  /// not named here are loaded whole. Checked by plan_load before anything is read.
  std::map<std::string, TensorSlice, std::less<>> slices;
  /// When set, plan_load adds each tensor's part for one rank of a tensor-parallel group
  /// (plan_tensor_parallel in parallel.hpp) to `slices`.
  std::shared_ptr<const TensorParallelOptions> tensor_parallel;
  /// When set, load_into fills only the bytes [first, second) of the plan's buffer and leaves
  /// the rest as it was: one rank's share when ranks split a load and exchange the parts. Both
  /// bounds must fall on element boundaries of the tensors they cut (multiples of 8 always do).
  std::optional<std::pair<std::uint64_t, std::uint64_t>> buffer_range;
  /// Called from worker threads with (bytes done, bytes total); must be thread-safe.
  std::function<void(std::uint64_t, std::uint64_t)> progress;
};

/// One loaded tensor: dtype and shape after conversion (and slicing), bytes inside the load
/// buffer.
struct SAFETENSORS_API LoadedTensor {
  std::string name;
  Dtype dtype = Dtype::U8;
  std::vector<std::uint64_t> shape;
  /// The part of the stored tensor loaded; nullopt for all of it.
  std::optional<TensorSlice> slice;
  std::uint64_t offset = 0;  // in the buffer
  std::uint64_t byte_count = 0;
};

/// Where every selected tensor goes in one contiguous buffer of exactly their bytes: widest
/// elements first, so that each tensor is aligned to its element size when the buffer is
/// (owned buffers are 64-byte aligned).
struct SAFETENSORS_API LoadPlan {
  std::vector<LoadedTensor> tensors;  // name order
  std::uint64_t buffer_size = 0;
};

/// Selects and lays out tensors. Throws tensor_not_found for a requested name that is absent,
/// invalid_slice for a slice that does not fit its tensor (or a sub-byte dtype's run that
/// does not end on a byte), before anything is read.
[[nodiscard]] SAFETENSORS_API LoadPlan plan_load(const Checkpoint& checkpoint,
                                                 const LoadOptions& options = {});

/// Loads into caller memory of at least `plan.buffer_size` bytes.
SAFETENSORS_API void load_into(const Checkpoint& checkpoint, const LoadPlan& plan,
                               std::span<std::byte> buffer, const LoadOptions& options = {});

/// Tensors loaded into memory: one allocation of exactly the plan's size that the library
/// owns, or (LoadMethod::mapped) private copy-on-write mappings of the files, whose pages are
/// all in memory. Either way the bytes stay valid, and writable, as long as this object.
class SAFETENSORS_API LoadedCheckpoint {
 public:
  const std::vector<LoadedTensor>& tensors() const noexcept { return plan_.tensors; }
  /// The bytes of `tensor`, an element of tensors() (or one with the name of one; empty when
  /// there is none).
  std::span<std::byte> bytes(const LoadedTensor& tensor) const noexcept;
  const LoadedTensor* find(std::string_view name) const noexcept;
  /// The tensors' bytes in all.
  std::uint64_t buffer_size() const noexcept { return plan_.buffer_size; }
  /// True when the tensors are mappings of the files (LoadMethod::mapped): aligned as the
  /// file lays them out, and `LoadedTensor::offset` unused.
  bool mapped() const noexcept { return !mapped_data_.empty(); }

 private:
  friend LoadedCheckpoint load(const Checkpoint&, const LoadOptions&);
  LoadPlan plan_;
  std::shared_ptr<std::byte[]> buffer_;  // owned loads
  std::vector<std::byte*> mapped_data_;  // mapped loads: each tensor's first byte, plan order
  std::vector<std::shared_ptr<const void>> mappings_;
};

/// Plans, allocates and loads.
[[nodiscard]] SAFETENSORS_API LoadedCheckpoint load(const Checkpoint& checkpoint,
                                                    const LoadOptions& options = {});

}  // namespace safetensors
