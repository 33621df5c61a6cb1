#include "safetensors/error.hpp"

namespace safetensors {

std::string_view error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::header_too_small:
      return "header_too_small";
    case ErrorCode::header_too_large:
      return "header_too_large";
    case ErrorCode::invalid_header_length:
      return "invalid_header_length";
    case ErrorCode::invalid_header_encoding:
      return "invalid_header_encoding";
    case ErrorCode::invalid_header:
      return "invalid_header";
    case ErrorCode::duplicate_key:
      return "duplicate_key";
    case ErrorCode::invalid_offsets:
      return "invalid_offsets";
    case ErrorCode::overflow:
      return "overflow";
    case ErrorCode::misaligned:
      return "misaligned";
    case ErrorCode::size_mismatch:
      return "size_mismatch";
    case ErrorCode::buffer_size_mismatch:
      return "buffer_size_mismatch";
    case ErrorCode::tensor_not_found:
      return "tensor_not_found";
    case ErrorCode::invalid_slice:
      return "invalid_slice";
    case ErrorCode::invalid_argument:
      return "invalid_argument";
    case ErrorCode::io:
      return "io";
    case ErrorCode::invalid_archive:
      return "invalid_archive";
    case ErrorCode::invalid_pickle:
      return "invalid_pickle";
    case ErrorCode::forbidden_pickle:
      return "forbidden_pickle";
    case ErrorCode::unsupported_checkpoint:
      return "unsupported_checkpoint";
    case ErrorCode::invalid_checkpoint:
      return "invalid_checkpoint";
    case ErrorCode::not_regular_file:
      return "not_regular_file";
    case ErrorCode::nul_character:
      return "nul_character";
    case ErrorCode::too_many_dimensions:
      return "too_many_dimensions";
    case ErrorCode::invalid_index:
      return "invalid_index";
    case ErrorCode::device:
      return "device";
  }
  return "unknown";
}

}  // namespace safetensors
