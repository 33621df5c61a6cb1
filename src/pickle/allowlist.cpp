#include "pickle/allowlist.hpp"

#include <algorithm>
#include <array>

namespace safetensors::detail::pickle {
namespace {

using Name = GlobalName;

constexpr Name allowed[] = {
    {"collections", "OrderedDict"},
    {"torch._utils", "_rebuild_tensor"},
    {"torch._utils", "_rebuild_tensor_v2"},
    {"torch._utils", "_rebuild_tensor_v3"},
    {"torch._utils", "_rebuild_parameter"},
    {"torch._utils", "_rebuild_parameter_with_state"},
    {"torch", "DoubleStorage"},
    {"torch", "FloatStorage"},
    {"torch", "HalfStorage"},
    {"torch", "BFloat16Storage"},
    {"torch", "LongStorage"},
    {"torch", "IntStorage"},
    {"torch", "ShortStorage"},
    {"torch", "CharStorage"},
    {"torch", "ByteStorage"},
    {"torch", "BoolStorage"},
    {"torch", "ComplexFloatStorage"},
    {"torch", "ComplexDoubleStorage"},
    {"torch.storage", "UntypedStorage"},
    {"torch", "float32"},
    {"torch", "float"},
    {"torch", "float64"},
    {"torch", "double"},
    {"torch", "float16"},
    {"torch", "half"},
    {"torch", "bfloat16"},
    {"torch", "int64"},
    {"torch", "long"},
    {"torch", "int32"},
    {"torch", "int"},
    {"torch", "int16"},
    {"torch", "short"},
    {"torch", "int8"},
    {"torch", "uint8"},
    {"torch", "bool"},
    {"torch", "complex64"},
    {"torch", "cfloat"},
    {"torch", "complex128"},
    {"torch", "cdouble"},
    {"torch", "float8_e4m3fn"},
    {"torch", "float8_e5m2"},
    {"torch", "float8_e4m3fnuz"},
    {"torch", "float8_e5m2fnuz"},
    {"torch", "float8_e8m0fnu"},
    {"torch", "uint16"},
    {"torch", "uint32"},
    {"torch", "uint64"},
    {"torch", "Size"},
    {"torch", "device"},
    {"_codecs", "encode"},
    {"builtins", "set"},
    {"builtins", "frozenset"},
    {"builtins", "bytearray"},
    {"builtins", "complex"},
    {"numpy.core.multiarray", "scalar"},
    {"numpy.core.multiarray", "_reconstruct"},
    {"numpy._core.multiarray", "scalar"},
    {"numpy._core.multiarray", "_reconstruct"},
    {"numpy", "dtype"},
    {"numpy", "ndarray"},
};

constexpr Name unsupported[] = {
    {"torch._utils", "_rebuild_qtensor"},
    {"torch._utils", "_rebuild_sparse_tensor"},
    {"torch._utils", "_rebuild_sparse_csr_tensor"},
    {"torch._utils", "_rebuild_wrapper_subclass"},
    {"torch._tensor", "_rebuild_from_type_v2"},
    {"torch.serialization", "_get_layout"},
    {"torch", "QInt8Storage"},
    {"torch", "QUInt8Storage"},
    {"torch", "QInt32Storage"},
    {"torch", "QUInt4x2Storage"},
    {"torch", "QUInt2x4Storage"},
};

template <std::size_t N>
bool contains(const Name (&names)[N], std::string_view module, std::string_view name) noexcept {
  return std::any_of(std::begin(names), std::end(names),
                     [&](const Name& n) { return n.module == module && n.name == name; });
}

// `module` is `package` or one of its submodules.
bool within(std::string_view module, std::string_view package) noexcept {
  return module == package || (module.size() > package.size() && module.starts_with(package) &&
                               module[package.size()] == '.');
}

}  // namespace

bool is_allowed_global(std::string_view module, std::string_view name) noexcept {
  return contains(allowed, module, name);
}

std::span<const GlobalName> allowed_globals() noexcept {
  return allowed;
}

bool is_known_unsupported_global(std::string_view module, std::string_view name) noexcept {
  return contains(unsupported, module, name) || within(module, "__torch__") ||
         within(module, "torch.jit");
}

}  // namespace safetensors::detail::pickle
