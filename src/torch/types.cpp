#include "torch/types.hpp"

#include <array>
#include <utility>

namespace safetensors::detail::torch {
namespace {

struct Named {
  std::string_view name;
  TorchDtype type;
};

// Element sizes from docs/CHECKPOINTS.md; complex128 is known so that errors can name it.
constexpr std::array<Named, 12> storage_classes = {{
    {"DoubleStorage", {Dtype::F64, 8, "float64"}},
    {"FloatStorage", {Dtype::F32, 4, "float32"}},
    {"HalfStorage", {Dtype::F16, 2, "float16"}},
    {"BFloat16Storage", {Dtype::BF16, 2, "bfloat16"}},
    {"LongStorage", {Dtype::I64, 8, "int64"}},
    {"IntStorage", {Dtype::I32, 4, "int32"}},
    {"ShortStorage", {Dtype::I16, 2, "int16"}},
    {"CharStorage", {Dtype::I8, 1, "int8"}},
    {"ByteStorage", {Dtype::U8, 1, "uint8"}},
    {"BoolStorage", {Dtype::BOOL, 1, "bool"}},
    {"ComplexFloatStorage", {Dtype::C64, 8, "complex64"}},
    {"ComplexDoubleStorage", {std::nullopt, 16, "complex128"}},
}};

// torch dtype attribute names, aliases included (torch.float is torch.float32).
constexpr std::array<Named, 30> dtype_names = {{
    {"float32", {Dtype::F32, 4, "float32"}},
    {"float", {Dtype::F32, 4, "float32"}},
    {"float64", {Dtype::F64, 8, "float64"}},
    {"double", {Dtype::F64, 8, "float64"}},
    {"float16", {Dtype::F16, 2, "float16"}},
    {"half", {Dtype::F16, 2, "float16"}},
    {"bfloat16", {Dtype::BF16, 2, "bfloat16"}},
    {"int64", {Dtype::I64, 8, "int64"}},
    {"long", {Dtype::I64, 8, "int64"}},
    {"int32", {Dtype::I32, 4, "int32"}},
    {"int", {Dtype::I32, 4, "int32"}},
    {"int16", {Dtype::I16, 2, "int16"}},
    {"short", {Dtype::I16, 2, "int16"}},
    {"int8", {Dtype::I8, 1, "int8"}},
    {"uint8", {Dtype::U8, 1, "uint8"}},
    {"bool", {Dtype::BOOL, 1, "bool"}},
    {"complex64", {Dtype::C64, 8, "complex64"}},
    {"cfloat", {Dtype::C64, 8, "complex64"}},
    {"complex128", {std::nullopt, 16, "complex128"}},
    {"cdouble", {std::nullopt, 16, "complex128"}},
    {"float8_e4m3fn", {Dtype::F8_E4M3, 1, "float8_e4m3fn"}},
    {"float8_e5m2", {Dtype::F8_E5M2, 1, "float8_e5m2"}},
    {"float8_e4m3fnuz", {Dtype::F8_E4M3FNUZ, 1, "float8_e4m3fnuz"}},
    {"float8_e5m2fnuz", {Dtype::F8_E5M2FNUZ, 1, "float8_e5m2fnuz"}},
    {"float8_e8m0fnu", {Dtype::F8_E8M0, 1, "float8_e8m0fnu"}},
    {"uint16", {Dtype::U16, 2, "uint16"}},
    {"uint32", {Dtype::U32, 4, "uint32"}},
    {"uint64", {Dtype::U64, 8, "uint64"}},
    {"complex32", {std::nullopt, 4, "complex32"}},
    {"chalf", {std::nullopt, 4, "complex32"}},
}};

template <std::size_t N>
std::optional<TorchDtype> find(const std::array<Named, N>& table, std::string_view name) {
  for (const Named& entry : table) {
    if (entry.name == name) return entry.type;
  }
  return std::nullopt;
}

}  // namespace

std::optional<StorageClass> storage_class(std::string_view module, std::string_view name) {
  if (name == "UntypedStorage" && (module == "torch" || module == "torch.storage")) {
    return StorageClass{{Dtype::U8, 1, "uint8"}, true};
  }
  if (module != "torch") return std::nullopt;
  if (auto type = find(storage_classes, name)) return StorageClass{*type, false};
  return std::nullopt;
}

std::optional<TorchDtype> torch_dtype(std::string_view module, std::string_view name) {
  if (module != "torch") return std::nullopt;
  return find(dtype_names, name);
}

std::string unsupported_reason(std::string_view module, std::string_view name) {
  const std::string full = std::string(module) + "." + std::string(name);
  const auto has = [&](std::string_view part) { return full.find(part) != std::string::npos; };
  if (module.starts_with("__torch__") || has("jit")) {
    return "TorchScript archives are not supported (" + full + ")";
  }
  if (has("qtensor") || has("QInt") || has("QUInt") || has("quantiz") || has("per_tensor") ||
      has("per_channel")) {
    return "quantized tensors are not supported (" + full + ")";
  }
  if (has("sparse") || has("_get_layout")) {
    return "sparse tensors are not supported (" + full + ")";
  }
  if (has("_rebuild_from_type") || has("_rebuild_wrapper_subclass") || has("subclass")) {
    return "tensor subclasses are not supported (" + full + ")";
  }
  if (has("nested")) return "nested tensors are not supported (" + full + ")";
  return full + " is a torch feature this converter does not support";
}

}  // namespace safetensors::detail::torch
