// Torch's storage classes and dtype globals as they appear in pickles, and the reasons we
// give for torch features we recognise but do not convert. Private to the library.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "safetensors/dtype.hpp"

namespace safetensors::detail::torch {

/// A torch element type: its safetensors dtype (absent for complex128, which the format
/// cannot hold) and its size in bytes.
struct TorchDtype {
  std::optional<Dtype> dtype;
  unsigned size = 1;
  std::string_view name;  // torch's spelling, for messages
};

/// A storage class global (`torch.FloatStorage`, `torch.storage.UntypedStorage`...).
struct StorageClass {
  TorchDtype element;  // for UntypedStorage: bytes (U8, size 1)
  bool untyped = false;
};

/// nullopt when (module, name) is not a storage class we can read.
[[nodiscard]] std::optional<StorageClass> storage_class(std::string_view module,
                                                        std::string_view name);

/// A dtype global such as `torch.float32`; nullopt for anything else.
[[nodiscard]] std::optional<TorchDtype> torch_dtype(std::string_view module, std::string_view name);

/// Why a recognised but unconvertible global (quantized, sparse, TorchScript, subclasses)
/// is refused, e.g. "quantized tensors are not supported".
[[nodiscard]] std::string unsupported_reason(std::string_view module, std::string_view name);

}  // namespace safetensors::detail::torch
