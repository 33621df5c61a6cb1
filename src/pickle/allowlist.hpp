// The exact (module, name) pairs a checkpoint pickle may import (issue: safe conversion).
#pragma once

#include <span>
#include <string_view>

namespace safetensors::detail::pickle {

struct GlobalName {
  std::string_view module;
  std::string_view name;
};

/// True for the globals a PyTorch or numpy checkpoint legitimately needs:
/// collections.OrderedDict; torch._utils._rebuild_tensor, _rebuild_tensor_v2,
/// _rebuild_tensor_v3, _rebuild_parameter, _rebuild_parameter_with_state; the typed storage
/// classes torch.*Storage and torch.storage.UntypedStorage; torch dtype names (torch.float32,
/// torch.bfloat16, ...); torch.Size, torch.device; _codecs.encode; builtins.set, frozenset,
/// bytearray, complex; numpy.core.multiarray.scalar and _reconstruct, numpy.dtype,
/// numpy.ndarray and the numpy._core spellings. Exact match, no prefixes, no dotted names.
bool is_allowed_global(std::string_view module, std::string_view name) noexcept;

/// Every pair is_allowed_global accepts, so that a test can pin the list: a pair added here
/// widens what a checkpoint may run and must be a deliberate, reviewed change.
std::span<const GlobalName> allowed_globals() noexcept;

/// Globals we recognise as valid torch but refuse to convert (quantized, sparse, subclasses,
/// TorchScript): lets errors say "unsupported" instead of "forbidden".
bool is_known_unsupported_global(std::string_view module, std::string_view name) noexcept;

}  // namespace safetensors::detail::pickle
