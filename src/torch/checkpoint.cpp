#include "torch/checkpoint.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <utility>

#include "encoding/little_endian.hpp"
#include "error/messages.hpp"
#include "pickle/allowlist.hpp"
#include "pickle/unpickler.hpp"
#include "safetensors/error.hpp"
#include "torch/graph.hpp"
#include "zip/archive.hpp"

namespace safetensors::detail::torch {
namespace {

using pickle::Kind;

constexpr std::uint64_t mib = std::uint64_t{1} << 20;

// A view may hold at most this many times the bytes of its storage (or of 1 MiB, for small
// storages). Views in real checkpoints are slices (smaller than their storage) or expand()ed
// buffers such as `position_ids` (about the same size); a stride-0 view of a few bytes that
// claims terabytes is an attack on the disk and on our time, refused before any copy.
constexpr std::uint64_t max_view_expansion = 16;

// The magic number that opens a legacy checkpoint, as the LONG1 bytes (little-endian) of
// 0x1950a86a20f9469cfc6c, and the protocol version that follows it.
constexpr std::array<unsigned char, 10> legacy_magic = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                                        0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr std::int64_t legacy_protocol = 1001;

[[noreturn]] void invalid(std::string_view origin, const std::string& message) {
  detail::fail(ErrorCode::invalid_checkpoint, origin, message);
}

pickle::Options strict_options() {
  pickle::Options options;
  options.mode = pickle::Mode::strict;
  // Known-unsupported globals are let through the parse (they are only recorded, never
  // resolved) so that the error can say "quantized" or "TorchScript" instead of "forbidden".
  options.allowed = [](std::string_view module, std::string_view name) {
    return pickle::is_allowed_global(module, name) ||
           pickle::is_known_unsupported_global(module, name);
  };
  return options;
}

pickle::Pickle parse(std::span<const std::byte> data, std::string_view origin) {
  pickle::Pickle p = pickle::unpickle(data, strict_options(), origin);
  for (const pickle::GlobalRef& g : p.globals) {
    // Every other global passed the allowlist (under CPython's own spelling of its module).
    if (pickle::is_known_unsupported_global(g.module, g.name) &&
        !pickle::is_allowed_global(g.module, g.name)) {
      detail::fail(ErrorCode::unsupported_checkpoint, origin,
                   unsupported_reason(g.module, g.name) + " (imported at byte " +
                       std::to_string(g.offset) + ")");
    }
  }
  return p;
}

std::uint64_t mul(std::uint64_t a, std::uint64_t b, std::string_view origin,
                  const std::string& what) {
  std::uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) invalid(origin, what + " overflows 64 bits");
  return r;
}

std::uint64_t add(std::uint64_t a, std::uint64_t b, std::string_view origin,
                  const std::string& what) {
  std::uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) invalid(origin, what + " overflows 64 bits");
  return r;
}

std::string list_text(const std::vector<std::int64_t>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

// A storage key's one description: every persistent id naming it must agree.
std::map<std::string, Storage> storages_by_key(const Graph& graph, std::string_view origin) {
  std::map<std::string, std::pair<const StorageId*, Storage>> seen;
  for (const auto& [id, sid] : graph.storages) {
    const std::uint64_t bytes = mul(sid.numel, sid.storage.element.size, origin,
                                    "storage " + detail::quote(sid.key) + " byte size");
    const auto [it, fresh] =
        seen.emplace(sid.key, std::pair{&sid, Storage{sid.key, Dtype::U8, bytes}});
    const StorageId& first = *it->second.first;
    if (!fresh &&
        (first.storage.untyped != sid.storage.untyped ||
         first.storage.element.name != sid.storage.element.name || first.numel != sid.numel)) {
      invalid(origin, "storage " + detail::quote(sid.key) + " appears as " +
                          std::string(first.storage.element.name) + " of " +
                          std::to_string(first.numel) + " elements and as " +
                          std::string(sid.storage.element.name) + " of " +
                          std::to_string(sid.numel));
    }
    if (fresh && !sid.storage.untyped && sid.storage.element.dtype) {
      it->second.second.dtype = *sid.storage.element.dtype;
    }
  }
  std::map<std::string, Storage> out;
  for (auto& [key, entry] : seen) out.emplace(key, entry.second);
  return out;
}

TensorRef checked_tensor(const TensorCall& call, const StorageId& sid, const Storage& storage,
                         std::string_view origin) {
  const std::string what = "tensor " + detail::quote(call.name);
  const TorchDtype type = call.dtype ? *call.dtype : sid.storage.element;
  if (!type.dtype) {
    detail::fail(
        ErrorCode::unsupported_checkpoint, origin,
        what + " has dtype " + std::string(type.name) + ", which safetensors cannot store");
  }
  const std::uint64_t el = type.size;
  const std::uint64_t base = sid.view_offset * sid.storage.element.size;  // legacy views
  const std::uint64_t limit =
      sid.view_size ? base + *sid.view_size * sid.storage.element.size : storage.byte_size;
  if (base % el != 0) invalid(origin, what + ": its storage view is not element-aligned");
  if (call.size.size() != call.stride.size()) {
    invalid(origin,
            what + " has size " + list_text(call.size) + " but stride " + list_text(call.stride));
  }
  const auto negative = [](std::int64_t x) { return x < 0; };
  if (call.offset < 0 || std::any_of(call.size.begin(), call.size.end(), negative) ||
      std::any_of(call.stride.begin(), call.stride.end(), negative)) {
    invalid(origin, what + ": negative offset, size or stride (offset " +
                        std::to_string(call.offset) + ", size " + list_text(call.size) +
                        ", stride " + list_text(call.stride) + ")");
  }
  TensorRef ref;
  ref.name = call.name;
  ref.storage_key = sid.key;
  ref.dtype = *type.dtype;
  ref.storage_offset = add(base / el, static_cast<std::uint64_t>(call.offset), origin, what);
  std::uint64_t numel = 1;
  std::uint64_t last = ref.storage_offset;
  for (std::size_t d = 0; d < call.size.size(); ++d) {
    const auto size = static_cast<std::uint64_t>(call.size[d]);
    const auto stride = static_cast<std::uint64_t>(call.stride[d]);
    ref.shape.push_back(size);
    ref.stride.push_back(stride);
    numel = mul(numel, size, origin, what + " element count");
    if (size > 0) last = add(last, mul(size - 1, stride, origin, what), origin, what);
  }
  // An empty tensor touches no element; its offset may still not point past the storage.
  const std::uint64_t end = numel == 0 ? mul(ref.storage_offset, el, origin, what)
                                       : mul(add(last, 1, origin, what), el, origin, what);
  if (end > limit) {
    invalid(origin, what + " (offset " + std::to_string(call.offset) + ", size " +
                        list_text(call.size) + ", stride " + list_text(call.stride) +
                        ") reaches byte " + std::to_string(end) + " of storage " +
                        detail::quote(sid.key) + ", which holds " + std::to_string(limit - base) +
                        " bytes");
  }
  const std::uint64_t view_bytes = mul(numel, el, origin, what + " byte size");
  if (view_bytes / max_view_expansion > std::max(limit - base, mib)) {
    invalid(origin, what + " expands " + std::to_string(limit - base) + " storage bytes to " +
                        std::to_string(view_bytes) + " (more than " +
                        std::to_string(max_view_expansion) + " times the storage or 1 MiB)");
  }
  return ref;
}

SavedModel assemble(const Graph& graph, std::string_view origin) {
  SavedModel out;
  out.storages = storages_by_key(graph, origin);
  out.dropped = graph.dropped;
  std::set<std::string> typed_from_tensor;
  for (const TensorCall& call : graph.tensors) {
    const StorageId& sid = graph.storages.at(call.storage);
    Storage& storage = out.storages.at(sid.key);
    out.tensors.push_back(checked_tensor(call, sid, storage, origin));
    if (sid.storage.untyped && typed_from_tensor.insert(sid.key).second) {
      storage.dtype = out.tensors.back().dtype;
    }
  }
  return out;
}

// ---- zip format ----

SavedModel read_zip(const Source& source, const ReadOptions& options) {
  const std::string& origin = source.name();
  auto archive = std::make_shared<zip::Archive>(zip::Archive::open(source, {}, true));
  const std::string folder = archive->top_folder();
  if (folder.empty()) {
    detail::fail(ErrorCode::invalid_archive, origin,
                 "a PyTorch archive keeps every entry under one top-level folder");
  }
  const std::string prefix = folder + "/";
  for (const zip::Entry& e : archive->entries()) {
    if (e.name == prefix + "constants.pkl" || e.name.starts_with(prefix + "code/")) {
      detail::fail(ErrorCode::unsupported_checkpoint, origin,
                   "TorchScript archives are not supported (entry " + detail::quote(e.name) +
                       "); save the model's state_dict() instead");
    }
  }
  if (const zip::Entry* order = archive->find(prefix + "byteorder")) {
    const std::vector<std::byte> bytes = archive->read(*order);
    const std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    if (text == "big") {
      detail::fail(ErrorCode::unsupported_checkpoint, origin,
                   "big-endian checkpoints are not supported");
    }
    if (text != "little") invalid(origin, "entry `byteorder` holds " + detail::quote(text));
  }
  const zip::Entry* data_pkl = archive->find(prefix + "data.pkl");
  if (!data_pkl) invalid(origin, "the archive has no " + detail::quote(prefix + "data.pkl"));
  const std::vector<std::byte> bytes = archive->read(*data_pkl);
  const std::string pickle_origin = origin + ":" + data_pkl->name;
  const pickle::Pickle p = parse(bytes, pickle_origin);
  if (p.end_offset != bytes.size()) {
    detail::fail(ErrorCode::invalid_pickle, pickle_origin,
                 std::to_string(bytes.size() - p.end_offset) + " bytes follow the STOP opcode");
  }
  SavedModel out = assemble(interpret(p, false, options.state_dict_key, origin), origin);
  out.format = Format::zip;
  for (const auto& [key, storage] : out.storages) {
    const zip::Entry* record = archive->find(prefix + "data/" + key);
    if (!record) invalid(origin, "storage " + detail::quote(key) + " has no data record");
    if (record->size != storage.byte_size) {
      invalid(origin, "storage " + detail::quote(key) + " needs " +
                          std::to_string(storage.byte_size) + " bytes but its record holds " +
                          std::to_string(record->size));
    }
  }
  out.read_storage = [archive, prefix](const Storage& storage) {
    const zip::Entry* record = archive->find(prefix + "data/" + storage.key);
    if (!record || record->size != storage.byte_size) {
      invalid(archive->source().name(),
              "storage " + detail::quote(storage.key) + " is not a record of the checkpoint");
    }
    if (!archive->stored_view(*record).empty()) {
      return detail::StorageBytes(archive->source(), record->data_offset, record->size);
    }
    return detail::StorageBytes(archive->read(*record));
  };
  return out;
}

// ---- legacy format ----

// The pickles at the start of a legacy file, parsed from a prefix that doubles until they
// fit, so an unmapped source is never read whole just to find where its pickles end.
class LegacyPickles {
 public:
  explicit LegacyPickles(const Source& source) : source_(source) {}

  std::vector<pickle::Pickle> parse_all(std::size_t count) {
    const std::span<const std::byte> mapped = source_.mapped();
    std::uint64_t want = std::min<std::uint64_t>(source_.size(), 4 * mib);
    for (;;) {
      std::span<const std::byte> data = mapped;
      if (data.empty()) {
        buffer_.resize(want);
        source_.read_at(0, buffer_);
        data = buffer_;
      }
      try {
        return parse_from(data, count);
      } catch (const Error& e) {
        // Only a pickle cut short by the prefix is worth a longer prefix; anything else
        // (a forbidden global, say) would not change, and must not make us read more.
        if (e.code() != ErrorCode::invalid_pickle || !mapped.empty() || want == source_.size()) {
          throw;
        }
        want = std::min(source_.size(), want * 2);
      }
    }
  }

  std::uint64_t end() const noexcept { return end_; }

 private:
  const Source& source_;
  std::vector<std::byte> buffer_;
  std::uint64_t end_ = 0;

  std::vector<pickle::Pickle> parse_from(std::span<const std::byte> data, std::size_t count) {
    std::vector<pickle::Pickle> out;
    std::uint64_t pos = 0;
    for (std::size_t i = 0; i < count; ++i) {
      out.push_back(parse(data.subspan(pos), source_.name()));
      pos += out.back().end_offset;
    }
    end_ = pos;
    return out;
  }
};

bool is_legacy_magic(const pickle::Pickle& p) {
  const pickle::Value& v = p.at(p.root);
  if (v.kind != Kind::big_integer) return false;
  std::string_view bytes = v.text;
  // LONG bytes may carry redundant sign-extension zeros.
  while (bytes.size() > legacy_magic.size() && bytes.back() == '\0') bytes.remove_suffix(1);
  return bytes.size() == legacy_magic.size() &&
         std::memcmp(bytes.data(), legacy_magic.data(), bytes.size()) == 0;
}

std::optional<pickle::ValueId> dict_get(const pickle::Pickle& p, pickle::ValueId dict,
                                        std::string_view key) {
  const pickle::Value& v = p.at(dict);
  if (v.kind != Kind::dict) return std::nullopt;
  std::optional<pickle::ValueId> found;
  for (std::size_t i = 0; i + 1 < v.items.size(); i += 2) {
    const pickle::Value& k = p.at(v.items[i]);
    if ((k.kind == Kind::string || k.kind == Kind::bytes) && k.text == key) {
      found = v.items[i + 1];
    }
  }
  return found;
}

void check_sys_info(const pickle::Pickle& p, std::string_view origin) {
  const auto little = dict_get(p, p.root, "little_endian");
  if (!little || p.at(*little).kind != Kind::boolean) {
    invalid(origin, "the legacy sys_info pickle has no `little_endian` flag");
  }
  if (!p.at(*little).boolean) {
    detail::fail(ErrorCode::unsupported_checkpoint, origin,
                 "big-endian checkpoints are not supported");
  }
  const auto sizes = dict_get(p, p.root, "type_sizes");
  if (!sizes) return;
  for (const auto& [type, allowed] :
       {std::pair<std::string_view, std::array<std::int64_t, 2>>{"short", {2, 2}},
        {"int", {4, 4}},
        {"long", {4, 8}}}) {
    const auto size = dict_get(p, *sizes, type);
    if (size && (p.at(*size).kind != Kind::integer ||
                 (p.at(*size).integer != allowed[0] && p.at(*size).integer != allowed[1]))) {
      invalid(origin,
              "the legacy sys_info gives an unusual size for C `" + std::string(type) + "`");
    }
  }
}

SavedModel read_legacy(const Source& source, const ReadOptions& options) {
  const std::string& origin = source.name();
  LegacyPickles reader(source);
  // The magic number first, so that other pickles are called "not a checkpoint".
  if (!is_legacy_magic(reader.parse_all(1)[0])) {
    invalid(origin,
            "not a PyTorch checkpoint: neither a zip archive nor a legacy file that "
            "starts with torch's magic number");
  }
  const std::vector<pickle::Pickle> pickles = reader.parse_all(5);
  const pickle::Value& protocol = pickles[1].at(pickles[1].root);
  if (protocol.kind != Kind::integer || protocol.integer != legacy_protocol) {
    invalid(origin, "legacy protocol version is not " + std::to_string(legacy_protocol));
  }
  check_sys_info(pickles[2], origin);
  const Graph graph = interpret(pickles[3], true, options.state_dict_key, origin);
  SavedModel out = assemble(graph, origin);
  out.format = Format::legacy;

  // Element sizes of every key, from its persistent ids.
  std::map<std::string, const StorageId*> ids;
  for (const auto& [id, sid] : graph.storages) ids.emplace(sid.key, &sid);
  const pickle::Value& keys = pickles[4].at(pickles[4].root);
  if (keys.kind != Kind::list) invalid(origin, "the legacy storage key list is not a list");
  auto offsets = std::make_shared<std::map<std::string, std::uint64_t>>();
  std::uint64_t pos = reader.end();
  for (pickle::ValueId item : keys.items) {
    const pickle::Value& k = pickles[4].at(item);
    if (k.kind != Kind::string && k.kind != Kind::bytes) {
      invalid(origin, "a legacy storage key is not a string");
    }
    const auto sid = ids.find(k.text);
    if (sid == ids.end()) {
      invalid(origin, "storage " + detail::quote(k.text) + " is listed but never used");
    }
    if (offsets->count(k.text)) {
      invalid(origin, "storage " + detail::quote(k.text) + " is listed twice");
    }
    std::array<std::byte, 8> count_bytes{};
    if (source.size() - pos < 8) {
      invalid(origin, "storage " + detail::quote(k.text) + " starts past the end of the file");
    }
    source.read_at(pos, count_bytes);
    const auto count = load_le<std::uint64_t>(std::span<const std::byte>(count_bytes));
    const StorageId& id = *sid->second;
    if (count != id.numel) {
      invalid(origin, "storage " + detail::quote(k.text) + " record holds " +
                          std::to_string(count) + " elements but its references say " +
                          std::to_string(id.numel));
    }
    const std::uint64_t bytes = out.storages.at(k.text).byte_size;
    if (source.size() - pos - 8 < bytes) {
      invalid(origin, "storage " + detail::quote(k.text) + " needs " + std::to_string(bytes) +
                          " bytes at offset " + std::to_string(pos + 8) + " but the file has " +
                          std::to_string(source.size() - pos - 8) + " left");
    }
    offsets->emplace(k.text, pos + 8);
    pos += 8 + bytes;
  }
  for (const auto& [key, storage] : out.storages) {
    if (!offsets->count(key)) invalid(origin, "storage " + detail::quote(key) + " has no data");
  }
  if (pos != source.size()) {
    invalid(origin, std::to_string(source.size() - pos) + " bytes follow the last storage");
  }
  const Source* src = &source;
  out.read_storage = [src, offsets](const Storage& storage) {
    const auto it = offsets->find(storage.key);
    if (it == offsets->end()) {
      invalid(src->name(), "storage " + detail::quote(storage.key) + " is not in the file");
    }
    // The range was checked against the file's size when the offsets were found.
    if (!src->mapped().empty()) return detail::StorageBytes(*src, it->second, storage.byte_size);
    std::vector<std::byte> bytes(storage.byte_size);
    src->read_at(it->second, bytes);
    return detail::StorageBytes(std::move(bytes));
  };
  return out;
}

}  // namespace

SavedModel read_checkpoint(const Source& source, const ReadOptions& options) {
  std::array<std::byte, 4> prefix{};
  const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(4, source.size()));
  source.read_at(0, std::span(prefix).first(n));
  if (zip::looks_like_zip(std::span(prefix).first(n))) return read_zip(source, options);
  // The legacy magic number is a PROTO-prefixed LONG1 from protocol 2 on, a text LONG
  // before (torch.save(..., pickle_protocol=1) still loads).
  if (n == 0 || (prefix[0] != std::byte{0x80} && prefix[0] != std::byte{'L'})) {
    invalid(source.name(),
            "not a PyTorch checkpoint: neither a zip archive nor a legacy file "
            "(which starts with torch's magic number)");
  }
  return read_legacy(source, options);
}

}  // namespace safetensors::detail::torch
