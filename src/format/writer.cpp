#include "safetensors/writer.hpp"

#include <algorithm>
#include <string>
#include <string_view>

#include "encoding/escape.hpp"
#include "encoding/little_endian.hpp"
#include "encoding/utf8.hpp"
#include "error/messages.hpp"
#include "safetensors/atomic_file.hpp"
#include "safetensors/error.hpp"

namespace safetensors {
namespace {

using detail::append_json_string;
using detail::is_utf8;
using detail::JsonText;

using Sink = std::function<void(std::span<const std::byte>)>;

// Producers fill one reusable buffer of at most this size, so memory stays bounded however
// large the tensors are.
constexpr std::uint64_t producer_chunk = std::uint64_t{8} << 20;

// WriteOptions::between_chunks runs at least this often: a few tens of milliseconds of
// writing, so a Ctrl-C is felt at once, and rare enough to cost nothing.
constexpr std::uint64_t interruption_chunk = std::uint64_t{64} << 20;

constexpr std::string_view metadata_key = "__metadata__";

// Names are shown JSON-escaped, so control characters stay visible in messages.
[[noreturn]] void throw_tensor_error(ErrorCode code, const TensorData& t, std::string_view what) {
  std::string message = "tensor ";
  append_json_string(message, t.name, JsonText::reference);
  message += " (";
  message += dtype_name(t.dtype);
  message += " shape [";
  for (std::size_t i = 0; i < t.shape.size(); ++i) {
    if (i) message += ',';
    message += std::to_string(t.shape[i]);
  }
  message += "]): ";
  message += what;
  throw Error(code, message);
}

void check_alignment(std::uint64_t alignment) {
  if (alignment < 8 || (alignment & (alignment - 1)) != 0) {
    std::string message = "write alignment ";
    message += std::to_string(alignment);
    message += " is not a power of two of at least 8";
    throw Error(ErrorCode::invalid_argument, message);
  }
}

std::uint64_t checked_byte_size(const TensorData& t) {
  if (t.name == metadata_key) {
    throw_tensor_error(ErrorCode::invalid_argument, t, "the name is reserved for the metadata");
  }
  if (t.name.find('\0') != std::string::npos) {
    throw_tensor_error(ErrorCode::nul_character, t, "the name contains a null byte (U+0000)");
  }
  if (t.shape.size() > max_rank) {
    throw_tensor_error(ErrorCode::too_many_dimensions, t,
                       "more than " + std::to_string(max_rank) + " dimensions");
  }
  // Readers refuse a header that is not UTF-8 (docs/FORMAT.md rule 4): no file nothing opens.
  if (!is_utf8(t.name)) {
    throw_tensor_error(ErrorCode::invalid_argument, t, "the name is not valid UTF-8");
  }
  const ByteSize size = byte_size(t.dtype, t.shape);
  if (size.problem == SizeProblem::overflow) {
    throw_tensor_error(ErrorCode::overflow, t, "the size in bits overflows 64 bits");
  }
  if (size.problem == SizeProblem::misaligned) {
    throw_tensor_error(ErrorCode::misaligned, t, "the size in bits is not a multiple of 8");
  }
  if (!t.producer && t.bytes.size() != size.bytes) {
    std::string what = "expected ";
    what += std::to_string(size.bytes);
    what += " bytes, got ";
    what += std::to_string(t.bytes.size());
    throw_tensor_error(ErrorCode::size_mismatch, t, what);
  }
  return size.bytes;
}

const Metadata* metadata_of(const WriteOptions& options) {
  if (options.borrowed_metadata) return options.borrowed_metadata;
  return options.metadata ? &*options.metadata : nullptr;
}

// Readers refuse text that is not UTF-8 and NUL characters (docs/FORMAT.md), so writing either
// would only make a file nothing opens: both are refused before a byte is written.
void check_metadata(const Metadata* metadata) {
  if (!metadata) return;
  for (const auto& [key, value] : *metadata) {
    for (const std::string* text : {&key, &value}) {
      const bool has_nul = text->find('\0') != std::string::npos;
      if (!has_nul && is_utf8(*text)) continue;
      std::string message = "__metadata__ key ";
      append_json_string(message, key, JsonText::reference);
      message += text == &key ? ": the key" : ": the value";
      message += has_nul ? " contains a null byte (U+0000)" : " is not valid UTF-8";
      throw Error(has_nul ? ErrorCode::nul_character : ErrorCode::invalid_argument, message);
    }
  }
}

void check_unique_names(std::span<const TensorData> tensors) {
  std::vector<const TensorData*> by_name;
  by_name.reserve(tensors.size());
  for (const TensorData& t : tensors) by_name.push_back(&t);
  std::sort(by_name.begin(), by_name.end(),
            [](const TensorData* a, const TensorData* b) { return a->name < b->name; });
  const auto dup = std::adjacent_find(
      by_name.begin(), by_name.end(),
      [](const TensorData* a, const TensorData* b) { return a->name == b->name; });
  if (dup != by_name.end()) {
    throw_tensor_error(ErrorCode::duplicate_key, **dup, "the name is given more than once");
  }
}

std::string header_json(std::span<const TensorData> tensors, const WritePlan& plan,
                        const std::vector<std::uint64_t>& sizes, const WriteOptions& options) {
  // Room for the 8-byte length in front, so that the plan keeps this string without a copy.
  std::string json(8, '\0');
  json += '{';
  if (const Metadata* metadata = metadata_of(options)) {
    append_json_string(json, metadata_key, JsonText::reference);
    json += ":{";
    bool first = true;
    for (const auto& [key, value] : *metadata) {  // std::map: sorted keys
      if (!first) json += ',';
      first = false;
      append_json_string(json, key, JsonText::reference);
      json += ':';
      append_json_string(json, value, JsonText::reference);
    }
    json += '}';
  }
  for (std::size_t i : plan.order) {
    const TensorData& t = tensors[i];
    if (json.size() > 9) json += ',';
    append_json_string(json, t.name, JsonText::reference);
    json += ":{\"dtype\":\"";
    json += dtype_name(t.dtype);
    json += "\",\"shape\":[";
    for (std::size_t d = 0; d < t.shape.size(); ++d) {
      if (d) json += ',';
      json += std::to_string(t.shape[d]);
    }
    json += "],\"data_offsets\":[";
    json += std::to_string(plan.begin[i]);
    json += ',';
    json += std::to_string(plan.begin[i] + sizes[i]);
    json += "]}";
  }
  json += '}';
  return json;
}

void stream_data(const WritePlan& plan, std::span<const TensorData> tensors,
                 const std::function<void()>& between_chunks, const Sink& sink) {
  auto emit = [&](std::span<const std::byte> bytes) {
    while (!bytes.empty()) {
      const std::size_t n = std::min<std::uint64_t>(bytes.size(), interruption_chunk);
      sink(bytes.first(n));
      bytes = bytes.subspan(n);
      if (between_chunks) between_chunks();
    }
  };
  emit(std::as_bytes(std::span(plan.header)));
  std::vector<std::byte> buffer;
  for (std::size_t i : plan.order) {
    const TensorData& t = tensors[i];
    if (!t.producer) {
      emit(t.bytes);
      continue;
    }
    const std::uint64_t end = byte_size(t.dtype, t.shape).bytes;  // validated by the plan
    // Grown to the largest chunk needed so far, never past producer_chunk.
    if (buffer.size() < std::min(end, producer_chunk)) buffer.resize(std::min(end, producer_chunk));
    for (std::uint64_t offset = 0; offset < end;) {
      const std::size_t n = std::min<std::uint64_t>(end - offset, buffer.size());
      const std::span<std::byte> chunk(buffer.data(), n);
      t.producer(offset, chunk);
      emit(chunk);
      offset += n;
    }
  }
}

}  // namespace

WritePlan plan_write(std::span<const TensorData> tensors, const WriteOptions& options) {
  check_alignment(options.alignment);
  std::vector<std::uint64_t> sizes;
  sizes.reserve(tensors.size());
  for (const TensorData& t : tensors) sizes.push_back(checked_byte_size(t));
  check_unique_names(tensors);
  check_metadata(metadata_of(options));

  WritePlan plan;
  plan.order.resize(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) plan.order[i] = i;
  std::sort(plan.order.begin(), plan.order.end(), [&](std::size_t a, std::size_t b) {
    const unsigned ra = dtype_write_rank(tensors[a].dtype);
    const unsigned rb = dtype_write_rank(tensors[b].dtype);
    // std::string compares as unsigned char: bytewise, as docs/FORMAT.md asks.
    return ra != rb ? ra < rb : tensors[a].name < tensors[b].name;
  });
  plan.begin.resize(tensors.size());
  for (std::size_t i : plan.order) {
    plan.begin[i] = plan.data_size;
    if (__builtin_add_overflow(plan.data_size, sizes[i], &plan.data_size)) {
      throw_tensor_error(ErrorCode::overflow, tensors[i], "the total data size overflows 64 bits");
    }
  }

  plan.header = header_json(tensors, plan, sizes, options);
  const std::uint64_t json_size = plan.header.size() - 8;
  const std::uint64_t unpadded = plan.header.size();
  const std::uint64_t padded = (unpadded + options.alignment - 1) & ~(options.alignment - 1);
  const std::uint64_t n = padded - 8;
  if (n > max_header_size || padded < unpadded) {
    std::string message = "header of ";
    message += std::to_string(json_size);
    message += " bytes padded to alignment ";
    message += std::to_string(options.alignment);
    message += " exceeds the limit of ";
    message += std::to_string(max_header_size);
    message += " bytes that readers accept";
    throw Error(ErrorCode::invalid_argument, message);
  }
  detail::store_le(n, std::span<char>(plan.header).first(8));
  plan.header.append(padded - plan.header.size(), ' ');
  return plan;
}

void write_to_sink(std::span<const TensorData> tensors, const WriteOptions& options,
                   const Sink& sink) {
  stream_data(plan_write(tensors, options), tensors, options.between_chunks, sink);
}

std::vector<std::byte> write_to_buffer(std::span<const TensorData> tensors,
                                       const WriteOptions& options) {
  const WritePlan plan = plan_write(tensors, options);
  std::vector<std::byte> out;
  out.reserve(plan.file_size());
  stream_data(plan, tensors, options.between_chunks, [&](std::span<const std::byte> chunk) {
    out.insert(out.end(), chunk.begin(), chunk.end());
  });
  return out;
}

void write_file(const std::filesystem::path& path, std::span<const TensorData> tensors,
                const WriteOptions& options) {
  // Planning first means invalid input never creates a temporary file.
  const WritePlan plan = plan_write(tensors, options);
  AtomicFile file(path);
  stream_data(plan, tensors, options.between_chunks,
              [&](std::span<const std::byte> chunk) { file.write(chunk); });
  file.commit();
}

}  // namespace safetensors
