// The framework names of every safetensors dtype: the one table from which the Python package
// derives its dtype dictionaries (`_core.dtypes()`) and by which `serialize` reads a dtype
// given by framework name. Bit widths come from the library's own table (dtype.hpp).
#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "bindings.hpp"
#include "safetensors/dtype.hpp"

namespace safetensors::python {

namespace {

// An empty name: the framework has no type with this layout.
struct FrameworkNames {
  Dtype dtype;
  std::string_view torch;      // attribute of the torch module (newer torch has more of them)
  std::string_view numpy;      // numpy's own dtype name
  std::string_view ml_dtypes;  // attribute of ml_dtypes, for types numpy lacks
};

// Indexed by the enumerator value, like the library's table.
constexpr std::array<FrameworkNames, dtype_count> framework_names = {{
    {Dtype::BOOL, "bool", "bool", ""},
    {Dtype::U8, "uint8", "uint8", ""},
    {Dtype::I8, "int8", "int8", ""},
    {Dtype::F8_E5M2, "float8_e5m2", "", "float8_e5m2"},
    {Dtype::F8_E4M3, "float8_e4m3fn", "", "float8_e4m3fn"},
    {Dtype::F8_E8M0, "float8_e8m0fnu", "", "float8_e8m0fnu"},
    {Dtype::F8_E4M3FNUZ, "float8_e4m3fnuz", "", "float8_e4m3fnuz"},
    {Dtype::F8_E5M2FNUZ, "float8_e5m2fnuz", "", "float8_e5m2fnuz"},
    {Dtype::I16, "int16", "int16", ""},
    {Dtype::U16, "uint16", "uint16", ""},
    {Dtype::F16, "float16", "float16", ""},
    {Dtype::BF16, "bfloat16", "", "bfloat16"},
    {Dtype::I32, "int32", "int32", ""},
    {Dtype::U32, "uint32", "uint32", ""},
    {Dtype::F32, "float32", "float32", ""},
    {Dtype::I64, "int64", "int64", ""},
    {Dtype::U64, "uint64", "uint64", ""},
    {Dtype::F64, "float64", "float64", ""},
    {Dtype::C64, "complex64", "complex64", ""},
    // torch's element is a byte holding two 4-bit values.
    {Dtype::F4, "float4_e2m1fn_x2", "", ""},
    {Dtype::F6_E2M3, "", "", ""},
    {Dtype::F6_E3M2, "", "", ""},
}};

constexpr bool every_dtype_has_its_row() {
  for (std::size_t i = 0; i < framework_names.size(); ++i) {
    if (static_cast<std::size_t>(framework_names[i].dtype) != i) return false;
  }
  return true;
}
static_assert(every_dtype_has_its_row(), "one row per Dtype, in enumerator order");

py::object name_or_none(std::string_view name) {
  if (name.empty()) return py::none();
  return py::str(std::string(name));
}

// (safetensors name, bits per element, torch attribute, numpy name, ml_dtypes attribute) for
// every dtype in enumerator order; None where the framework has no such type.
py::tuple dtypes() {
  py::tuple out(framework_names.size());
  for (std::size_t i = 0; i < framework_names.size(); ++i) {
    const FrameworkNames& row = framework_names[i];
    out[i] = py::make_tuple(std::string(dtype_name(row.dtype)), dtype_bits(row.dtype),
                            name_or_none(row.torch), name_or_none(row.numpy),
                            name_or_none(row.ml_dtypes));
  }
  return out;
}

}  // namespace

std::optional<Dtype> dtype_from_framework_name(std::string_view name) {
  if (!name.empty()) {  // an empty column means "no such type", never a match
    for (const FrameworkNames& row : framework_names) {
      if (row.torch == name || row.numpy == name || row.ml_dtypes == name) return row.dtype;
    }
  }
  return dtype_from_name(name);
}

void register_dtypes(py::module_& module) {
  module.def("dtypes", &dtypes,
             "(safetensors name, bits per element, torch attribute, numpy name, ml_dtypes "
             "attribute) for every dtype of the format; None where the framework has no such "
             "type.");
}

}  // namespace safetensors::python
