// The one exception type of the library and the precise codes it carries.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

#include "safetensors/export.hpp"

namespace safetensors {

/// What went wrong. The first eleven follow docs/FORMAT.md's validation rules in order.
enum class ErrorCode {
  header_too_small = 1,     // rule 1: file shorter than 8 bytes
  header_too_large,         // rule 2: N > 100,000,000
  invalid_header_length,    // rule 3: 8 + N beyond the end of the file
  invalid_header_encoding,  // rule 4: header is not UTF-8
  invalid_header,           // rule 5: not JSON, wrong shape, unknown dtype
  duplicate_key,            // rule 6: a key appears twice
  invalid_offsets,          // rule 7: hole, overlap, leading gap or end < begin
  overflow,                 // rule 8: shape product or bit count overflows 64 bits
  misaligned,               // rule 9: sub-byte tensor whose bits are not whole bytes
  size_mismatch,            // rule 10: data_offsets span differs from the tensor size
  buffer_size_mismatch,     // rule 11: trailing or missing bytes after the last tensor
  tensor_not_found,         // lookup of a name the file does not have
  invalid_slice,            // slice argument out of range, zero step, too many dims
  invalid_argument,         // caller error outside the format (writer input, options)
  io,                       // the operating system refused a read, write, map or rename, or a
                            // file changed under us (shrank, or read back other bytes)
  invalid_archive,          // a zip archive breaks our strict rules (duplicates, CRC, bombs...)
  invalid_pickle,           // a pickle is malformed (truncated, bad memo, stack underflow...)
  forbidden_pickle,         // a pickle imports a global or uses an opcode outside the allowlist
  unsupported_checkpoint,   // a valid checkpoint of a kind we refuse (quantized, sparse,
                            // TorchScript)
  invalid_checkpoint,       // a torch, pickle or .npy checkpoint that is malformed (its
                            // storages and views disagree, a bad .npy header...)
  not_regular_file,         // an input is a FIFO, socket, device or directory, not a file
  nul_character,            // a tensor name or metadata key/value holds U+0000 (docs/FORMAT.md)
  too_many_dimensions,      // a shape of rank above max_rank (docs/FORMAT.md)
  invalid_index,            // a sharded checkpoint's index is malformed or disagrees with
                            // its shards (missing shard, tensor in two shards...)
  device,                   // a device path is unavailable (no CUDA runtime, no device) or
                            // the device refused an operation (allocation, copy)
};

/// A short stable name for the code, e.g. "invalid_offsets".
[[nodiscard]] SAFETENSORS_API std::string_view error_code_name(ErrorCode code) noexcept;

/// Thrown by every library function. `what()` is a complete sentence naming the file,
/// the tensor or key and the values involved.
class SAFETENSORS_API Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  /// A failure the operating system reported: `os_error` is its errno, kept so that callers
  /// can tell a missing file from a refused one without parsing the message.
  Error(ErrorCode code, const std::string& message, std::error_code os_error)
      : std::runtime_error(message), code_(code), os_error_(os_error) {}
  ErrorCode code() const noexcept { return code_; }
  /// The system's error behind an `io` failure (compare with `std::errc` values); empty
  /// (false) for every error the library found itself.
  const std::error_code& os_error() const noexcept { return os_error_; }

 private:
  ErrorCode code_;
  std::error_code os_error_;
};

}  // namespace safetensors
