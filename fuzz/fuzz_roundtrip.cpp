// libFuzzer target for writing then reading: the input describes tensors (names of any bytes,
// any dtype, small shapes, data), metadata and an alignment. The writer may refuse them with
// safetensors::Error; what it writes must open (no other verdict for the same bytes), hold
// exactly what was written, and follow the layout rules of FORMAT.md "Writing".
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "reader.hpp"
#include "require.hpp"
#include "safetensors/error.hpp"
#include "safetensors/file.hpp"
#include "safetensors/header.hpp"
#include "safetensors/source.hpp"
#include "safetensors/writer.hpp"

namespace {

using fuzz::Reader;
using fuzz::require;

struct Written {
  safetensors::Dtype dtype;
  std::vector<std::uint64_t> shape;
  std::vector<std::byte> bytes;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace st = safetensors;
  Reader in(data, size);
  const auto dtypes = st::all_dtypes();
  std::vector<std::vector<std::byte>> storage(in.byte() % 6);
  std::vector<st::TensorData> tensors;
  for (auto& bytes : storage) {
    std::string name = in.text();
    const st::Dtype dtype = dtypes[in.byte() % dtypes.size()];
    std::vector<std::uint64_t> shape(in.byte() % 4);
    for (auto& d : shape) d = in.byte() % 5;
    const st::ByteSize byte_size = st::byte_size(dtype, shape);
    // Packed shapes off a byte boundary have no byte count: the writer must refuse them.
    bytes.resize(byte_size ? byte_size.bytes : 0);
    for (auto& b : bytes) b = static_cast<std::byte>(in.byte());
    tensors.push_back(st::TensorData::from_bytes(std::move(name), dtype, std::move(shape), bytes));
  }
  st::WriteOptions options;
  if (const std::uint8_t keys = in.byte(); keys % 4 != 0) {
    options.metadata.emplace();
    for (unsigned k = 1; k < keys % 4; ++k) options.metadata->emplace(in.text(), in.text());
  }
  options.alignment = std::uint64_t{8} << (in.byte() % 4);

  std::vector<std::byte> file;
  try {
    file = st::write_to_buffer(tensors, options);
  } catch (const st::Error&) {
    return 0;
  }
  // The streaming writer produces the same bytes.
  std::vector<std::byte> streamed;
  st::write_to_sink(tensors, options, [&](std::span<const std::byte> chunk) {
    streamed.insert(streamed.end(), chunk.begin(), chunk.end());
  });
  require(streamed == file, "write_to_sink and write_to_buffer differ");

  // Layout: N, the JSON, spaces up to the alignment, then the data, nothing else.
  require(file.size() >= 8, "no length prefix");
  std::uint64_t n = 0;
  for (std::size_t i = 8; i-- > 0;) n = (n << 8) | static_cast<std::uint8_t>(file[i]);
  require((8 + n) % options.alignment == 0, "header not padded to the alignment");
  require(n <= file.size() - 8, "header longer than the file");
  std::size_t json_end = 8 + n;
  while (json_end > 8 && file[json_end - 1] == std::byte{' '}) --json_end;
  require(8 + n - json_end < options.alignment, "more padding than the alignment needs");
  require(json_end > 8 && file[json_end - 1] == std::byte{'}'}, "header does not end in }");

  const st::File opened = st::File::from_source(st::make_memory_source(file, "written"));
  require(opened.metadata() == options.metadata, "metadata differs after a round trip");
  require(opened.tensors().size() == tensors.size(), "tensor count differs");
  std::map<std::string, Written> want;
  for (const st::TensorData& t : tensors) {
    want[t.name] = {t.dtype, t.shape, {t.bytes.begin(), t.bytes.end()}};
  }
  std::uint64_t data_size = 0;
  for (const st::TensorInfo& info : opened.tensors()) {
    const auto it = want.find(info.name);
    require(it != want.end(), "a tensor that was not written was read");
    require(info.dtype == it->second.dtype && info.shape == it->second.shape,
            "dtype or shape differs after a round trip");
    require(opened.read(info.name) == it->second.bytes, "bytes differ after a round trip");
    data_size += info.byte_count();
  }
  require(file.size() == 8 + n + data_size, "bytes between or after the tensors");
  // Data order: dtypes as FORMAT.md lists them, then names; offsets consecutive from 0.
  // (Checked on the plan: the reader breaks ties between empty tensors by name alone.)
  const st::WritePlan plan = st::plan_write(tensors, options);
  require(plan.header.size() == 8 + n &&
              std::equal(plan.header.begin(), plan.header.end(), file.begin(),
                         [](char c, std::byte b) { return static_cast<std::byte>(c) == b; }),
          "plan_write's header is not the file's");
  const auto rank = [](st::Dtype d) { return st::dtype_write_rank(d); };
  std::uint64_t offset = 0;
  for (std::size_t k = 0; k < plan.order.size(); ++k) {
    const st::TensorData& t = tensors[plan.order[k]];
    require(plan.begin[plan.order[k]] == offset, "tensors are not consecutive from 0");
    require(opened.info(t.name).data_begin == offset, "data_offsets differ from the plan");
    offset += t.bytes.size();
    if (k == 0) continue;
    const st::TensorData& before = tensors[plan.order[k - 1]];
    require(rank(before.dtype) < rank(t.dtype) ||
                (rank(before.dtype) == rank(t.dtype) && before.name < t.name),
            "tensors are not in dtype, then name order");
  }
  return 0;
}
