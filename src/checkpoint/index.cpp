#include "checkpoint/index.hpp"

#include <simdjson.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "encoding/escape.hpp"
#include "encoding/utf8.hpp"
#include "error/messages.hpp"
#include "io/posix.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail {
namespace {

namespace dom = simdjson::dom;

constexpr std::string_view total_size_key = "total_size";

std::string_view type_name(dom::element_type type) {
  switch (type) {
    case dom::element_type::OBJECT:
      return "an object";
    case dom::element_type::ARRAY:
      return "an array";
    case dom::element_type::STRING:
      return "a string";
    case dom::element_type::INT64:
    case dom::element_type::UINT64:
      return "an integer";
    case dom::element_type::DOUBLE:
      return "a number with a fraction or exponent";
    case dom::element_type::BOOL:
      return "a boolean";
    case dom::element_type::NULL_VALUE:
      return "null";
  }
  return "an unknown value";
}

[[noreturn]] void invalid(std::string_view origin, std::string_view message) {
  fail(ErrorCode::invalid_index, origin, message);
}

// The DOM keeps every member of an object, repeats included, so repeats are found here.
void refuse_repeated_keys(std::vector<std::string_view> keys, std::string_view origin,
                          std::string_view where) {
  std::sort(keys.begin(), keys.end());
  const auto repeat = std::adjacent_find(keys.begin(), keys.end());
  if (repeat != keys.end()) {
    invalid(origin, std::string(where) + " key " + quote(*repeat) + " appears twice");
  }
}

std::uint64_t read_total_size(dom::element value, std::string_view origin) {
  std::uint64_t size = 0;
  if (!value.get_uint64().get(size) && value.type() != dom::element_type::DOUBLE) return size;
  std::string got(type_name(value.type()));
  if (double number = 0; !value.get_double().get(number)) {
    char shown[48];
    std::snprintf(shown, sizeof shown, " (%.17g)", number);
    got = (value.type() == dom::element_type::DOUBLE ? got : "a negative integer") + shown;
  }
  invalid(origin, "`metadata.total_size` must be a non-negative integer, got " + got);
}

// Values other than strings (transformers also writes `total_parameters`, a number) carry
// no meaning we could keep in a string-to-string Metadata, so they are skipped; the parser
// has already checked that they are well-formed JSON.
void read_metadata(dom::element value, std::string_view origin, CheckpointIndex& out) {
  dom::object object;
  if (value.get_object().get(object)) {
    invalid(origin, "`metadata` must be an object, got " + std::string(type_name(value.type())));
  }
  std::vector<std::string_view> keys;
  Metadata kept;
  for (dom::key_value_pair member : object) {
    keys.push_back(member.key);
    if (member.key == total_size_key) {
      out.total_size = read_total_size(member.value, origin);
    } else if (std::string_view text; !member.value.get_string().get(text)) {
      kept.emplace(member.key, text);
    }
  }
  refuse_repeated_keys(std::move(keys), origin, "`metadata`");
  if (!kept.empty()) out.metadata = std::move(kept);
}

void read_weight_map(dom::element value, std::string_view origin, CheckpointIndex& out) {
  dom::object object;
  if (value.get_object().get(object)) {
    invalid(origin, "`weight_map` must be an object of tensor names to shard files, got " +
                        std::string(type_name(value.type())));
  }
  out.weight_map.reserve(object.size());
  for (dom::key_value_pair member : object) {
    std::string_view shard;
    if (member.value.get_string().get(shard)) {
      invalid(origin, "`weight_map` maps tensor " + quote(member.key) + " to " +
                          std::string(type_name(member.value.type())) +
                          ", not to a shard file name");
    }
    out.weight_map.emplace_back(member.key, shard);
  }
  std::sort(out.weight_map.begin(), out.weight_map.end());
  const auto repeat =
      std::adjacent_find(out.weight_map.begin(), out.weight_map.end(),
                         [](const auto& a, const auto& b) { return a.first == b.first; });
  if (repeat != out.weight_map.end()) {
    invalid(origin, "`weight_map` maps tensor " + quote(repeat->first) + " twice (to " +
                        quote(repeat->second) + " and " + quote(std::next(repeat)->second) + ")");
  }
}

// Python's json.dumps with ensure_ascii (its default), which transformers writes indexes
// with. Text that is not UTF-8 has no such form: Python could not have held it.
void append_python_json_string(std::string& out, std::string_view text) {
  if (!is_utf8(text)) {
    throw Error(ErrorCode::invalid_argument,
                "index entry " + quote(text) + " is not valid UTF-8 and cannot be written");
  }
  append_json_string(out, text, JsonText::ascii);
}

// One level of json.dumps(indent=2) output: `{`, members one per line, `}`.
void append_object(std::string& out, const std::string& indent,
                   const std::vector<std::pair<std::string_view, std::string>>& members) {
  if (members.empty()) {
    out += "{}";
    return;
  }
  out += "{\n";
  for (std::size_t i = 0; i < members.size(); ++i) {
    out += indent + "  ";
    append_python_json_string(out, members[i].first);
    out += ": " + members[i].second;
    out += i + 1 < members.size() ? ",\n" : "\n";
  }
  out += indent + "}";
}

std::string python_json_string(std::string_view text) {
  std::string out;
  append_python_json_string(out, text);
  return out;
}

constexpr std::uint64_t max_index_size = std::uint64_t{1} << 30;

}  // namespace

std::string read_checkpoint_index(const std::string& path) {
  std::string text = read_regular_file(path, max_index_size);
  if (text.size() > max_index_size) {
    fail(ErrorCode::invalid_index, path,
         "index is larger than " + std::to_string(max_index_size) + " bytes");
  }
  return text;
}

CheckpointIndex parse_checkpoint_index(std::string_view json, std::string_view origin) {
  const simdjson::padded_string padded(json);
  dom::parser parser;
  dom::element root;
  if (auto error = parser.parse(padded).get(root)) {
    invalid(origin, std::string("index is not valid JSON: ") + simdjson::error_message(error));
  }
  dom::object object;
  if (root.get_object().get(object)) {
    invalid(origin, "index must be a JSON object, got " + std::string(type_name(root.type())));
  }
  CheckpointIndex out;
  std::vector<std::string_view> keys;
  bool has_weight_map = false;
  for (dom::key_value_pair member : object) {
    keys.push_back(member.key);
    if (member.key == "metadata") {
      read_metadata(member.value, origin, out);
    } else if (member.key == "weight_map") {
      read_weight_map(member.value, origin, out);
      has_weight_map = true;
    }
  }
  refuse_repeated_keys(std::move(keys), origin, "top-level");
  if (!has_weight_map) invalid(origin, "index has no `weight_map`");
  return out;
}

std::string shard_name_problem(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name.find('\0') != std::string_view::npos) return "contains a NUL byte";
  if (name.find('\\') != std::string_view::npos) return "contains a backslash";
  if (name.front() == '/') return "is an absolute path";
  for (std::size_t begin = 0; begin <= name.size();) {
    std::size_t end = name.find('/', begin);
    if (end == std::string_view::npos) end = name.size();
    if (name.substr(begin, end - begin) == "..") return "leaves the directory";
    begin = end + 1;
  }
  return {};
}

std::string checkpoint_index_json(
    const std::vector<std::pair<std::string, std::string>>& weight_map, std::uint64_t total_size,
    const std::optional<Metadata>& metadata) {
  // std::map orders by bytes, which for UTF-8 is code point order: Python's sort_keys.
  std::map<std::string_view, std::string> metadata_values;
  if (metadata) {
    if (metadata->count(total_size_key)) {
      throw Error(ErrorCode::invalid_argument,
                  "metadata key `total_size` is reserved for the index of a sharded checkpoint");
    }
    for (const auto& [key, value] : *metadata)
      metadata_values.emplace(key, python_json_string(value));
  }
  metadata_values.emplace(total_size_key, std::to_string(total_size));

  std::vector<std::pair<std::string_view, std::string>> members(metadata_values.begin(),
                                                                metadata_values.end());
  std::string metadata_json;
  append_object(metadata_json, "  ", members);
  members.clear();
  for (const auto& [tensor, shard] : weight_map)
    members.emplace_back(tensor, python_json_string(shard));
  std::string weight_map_json;
  append_object(weight_map_json, "  ", members);

  std::string out;
  append_object(
      out, "",
      {{"metadata", std::move(metadata_json)}, {"weight_map", std::move(weight_map_json)}});
  out += '\n';
  return out;
}

}  // namespace safetensors::detail
