#include "format/header_json.hpp"

#include <simdjson.h>

#include <algorithm>
#include <utility>

#include "error/messages.hpp"
#include "format/header_names.hpp"

namespace safetensors::detail {
namespace {

namespace ondemand = simdjson::ondemand;

// On-Demand checks only what is visited, so values of unknown fields are walked in full;
// this bounds the recursion. The reference's JSON reader stops at the same depth.
constexpr int max_unknown_depth = 128;

// A parser keeps its buffers, sized for the largest header it has read, for the next call on
// the same thread. Larger headers get a parser of their own, freed afterwards: its working
// space is up to 4 bytes per header byte, which a caller going on to use the header (merge,
// inspect) would otherwise keep on top of everything it allocates next. Real shards' headers
// (a few hundred tensors, tens of KB) stay far below the limit.
constexpr std::size_t max_cached_header = std::size_t{4} << 20;

bool is_json_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// On-Demand's raw scalar tokens run up to the next structural character.
std::string_view trim_space(std::string_view token) {
  while (!token.empty() && is_json_space(token.back())) token.remove_suffix(1);
  return token;
}

std::size_t skip_digits(std::string_view text, std::size_t i) {
  while (i < text.size() && is_digit(text[i])) ++i;
  return i;
}

// RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
bool is_json_number(std::string_view t) {
  std::size_t i = 0;
  if (i < t.size() && t[i] == '-') ++i;
  if (i == t.size() || !is_digit(t[i])) return false;
  i = t[i] == '0' ? i + 1 : skip_digits(t, i);
  if (i < t.size() && t[i] == '.') {
    std::size_t start = ++i;
    i = skip_digits(t, i);
    if (i == start) return false;
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    std::size_t start = i;
    i = skip_digits(t, i);
    if (i == start) return false;
  }
  return i == t.size();
}

std::string_view type_name(ondemand::json_type type) {
  switch (type) {
    case ondemand::json_type::object:
      return "an object";
    case ondemand::json_type::array:
      return "an array";
    case ondemand::json_type::string:
      return "a string";
    case ondemand::json_type::number:
      return "a number";
    case ondemand::json_type::boolean:
      return "a boolean";
    case ondemand::json_type::null:
      return "null";
  }
  return "an unknown value";
}

// A number token shown in a message; a hostile one may be megabytes of digits.
std::string show_token(std::string_view token) {
  constexpr std::size_t max_shown = 40;
  if (token.size() <= max_shown) return std::string(token);
  return std::string(token.substr(0, max_shown)) + "...";
}

// A key together with where it starts, to find repeats and report the earliest.
struct KeyAt {
  std::string_view key;
  std::size_t offset;
};

// What a message says the problem is inside of.
struct Where {
  std::string_view kind;  // "tensor", "__metadata__ key"; empty for the header itself
  std::string_view name;
  std::string_view field;  // a field of a tensor entry, or empty

  std::string describe() const {
    std::string out = !kind.empty()  ? std::string(kind) + " " + quote(name)
                      : name.empty() ? std::string("header")
                                     : quote(name);
    if (!field.empty()) out += ": field " + quote(field);
    return out;
  }
};

class Reader {
 public:
  Reader(std::string_view origin, const char* base) : origin_(origin), base_(base) {}

  JsonHeader read(ondemand::document& doc, std::size_t size) {
    // The shortest entry, `"":{"dtype":"U8","shape":[],"data_offsets":[0,0]},`, is 49 bytes;
    // reserving for that many never reallocates and stays proportional to the header size.
    // Reserved memory is not touched until used; four dimensions an entry cover most models.
    out_.tensors.reserve(size / 49 + 1);
    out_.dims.reserve(4 * (size / 49 + 1));
    ondemand::object root;
    if (auto error = doc.get_object().get(root)) {
      ondemand::json_type type;
      if (error == simdjson::INCORRECT_TYPE && !doc.type().get(type)) {
        fail(ErrorCode::invalid_header, origin_,
             "header must be a JSON object, got " + std::string(type_name(type)));
      }
      malformed({}, error);
    }
    std::string_view previous;
    bool any_entry = false;
    for (auto field_result : root) {
      ondemand::field field;
      if (auto error = std::move(field_result).get(field))
        malformed_after(any_entry, previous, error);
      std::size_t offset = key_offset(field);
      std::string_view key = top_level_key(field);
      refuse_nul(key, {"tensor", key, ""}, false);
      if (key == "__metadata__") {
        read_metadata(field.value(), offset);
      } else {
        read_tensor(key, field.value(), offset);
      }
      previous = key;
      any_entry = true;
    }
    auto end = doc.current_location();
    if (end.error() != simdjson::OUT_OF_BOUNDS) {
      std::string where;
      if (const char* at = nullptr; !std::move(end).get(at))
        where = " at offset " + std::to_string(at - base_);
      fail(ErrorCode::invalid_header, origin_,
           "unexpected data after the header's JSON object" + where);
    }
    // Keys made before the shared prefix got shorter, made again for the prefix of all names.
    for (std::size_t i = 0; i < stale_keys_; ++i) {
      out_.tensors[i].key = name_key(out_.tensors[i].name, out_.name_prefix);
    }
    return std::move(out_);
  }

 private:
  [[noreturn]] void invalid(const Where& where, std::string_view what) const {
    fail(ErrorCode::invalid_header, origin_, where.describe() + ": " + std::string(what));
  }

  [[noreturn]] void malformed(const Where& where, simdjson::error_code error) const {
    invalid(where, std::string("malformed JSON: ") + simdjson::error_message(error));
  }

  [[noreturn]] void malformed_after(bool any_entry, std::string_view previous,
                                    simdjson::error_code error) const {
    std::string where = any_entry ? "after the entry " + quote(previous) : "at its start";
    fail(ErrorCode::invalid_header, origin_,
         "header: malformed JSON " + where + ": " + simdjson::error_message(error));
  }

  // docs/FORMAT.md: names and metadata are C strings to most of the code that uses them (file
  // systems, framework APIs), where a NUL would silently cut them short. `where` shows a
  // name or key itself; a value is shown after it.
  void refuse_nul(std::string_view text, const Where& where, bool is_value) const {
    if (text.find('\0') == std::string_view::npos) return;
    fail(ErrorCode::nul_character, origin_,
         where.describe() + (is_value ? ": the value " + quote(text) : std::string()) +
             " contains a null byte (U+0000)");
  }

  void check(simdjson::error_code error, const Where& where) const {
    if (error) malformed(where, error);
  }

  std::size_t key_offset(const ondemand::field& field) const {
    return static_cast<std::size_t>(field.key().raw() - base_);
  }

  std::string_view unescaped_key(ondemand::field& field, const Where& where) const {
    std::string_view key;
    if (auto error = field.unescaped_key().get(key)) {
      invalid(where,
              std::string("a key is not a valid JSON string: ") + simdjson::error_message(error));
    }
    return key;
  }

  // A tensor name without escapes, as it stands in the header: unescaping would copy every
  // name into the parser's string buffer (9 MB of fresh memory for 200,000 tensors). The
  // parser's first pass has checked that the string closes, so the scan stops inside the
  // header; a backslash first means escapes, which take the general path, and the name is
  // kept beside the header, since the parser's buffer does not outlive the parse.
  std::string_view top_level_key(ondemand::field& field) {
    const char* const begin = reinterpret_cast<const char*>(field.key().raw());
    for (const char* at = begin;; ++at) {
      if (*at == '"') return {begin, static_cast<std::size_t>(at - begin)};
      if (*at == '\\') return out_.unescaped_names.emplace_back(unescaped_key(field, {}));
    }
  }

  // The field names every entry has are matched in place, saving the unescaping copy; an
  // escaped spelling of them still takes the general path.
  std::string_view field_name(ondemand::field& field, const Where& where) const {
    ondemand::raw_json_string raw = field.key();
    for (std::string_view known : {"dtype", "shape", "data_offsets"}) {
      if (raw.unsafe_is_equal(known)) return known;
    }
    return unescaped_key(field, where);
  }

  ondemand::json_type type_of(ondemand::value& value, const Where& where) const {
    ondemand::json_type type;
    check(value.type().get(type), where);
    return type;
  }

  void note_duplicate(std::size_t offset, const std::string& message) {
    if (offset < out_.duplicate_offset) {
      out_.duplicate_offset = offset;
      out_.duplicate_message = message;
    }
  }

  // Sorting keeps this linear-logarithmic however many keys an object has.
  void note_repeated_keys(std::vector<KeyAt>& keys, const Where& where, std::string_view what) {
    if (keys.size() < 2) return;
    std::sort(keys.begin(), keys.end(), [](const KeyAt& a, const KeyAt& b) {
      return a.key < b.key || (a.key == b.key && a.offset < b.offset);
    });
    for (std::size_t i = 1; i < keys.size(); ++i) {
      if (keys[i].key == keys[i - 1].key && keys[i].offset < out_.duplicate_offset) {
        note_duplicate(keys[i].offset, where.describe() + ": " + std::string(what) + " " +
                                           quote(keys[i].key) + " appears twice");
      }
    }
  }

  void read_metadata(ondemand::value& value, std::size_t offset) {
    if (seen_metadata_) note_duplicate(offset, "`__metadata__` appears twice");
    seen_metadata_ = true;
    const Where where{"", "__metadata__", ""};
    ondemand::json_type type = type_of(value, where);
    if (type == ondemand::json_type::null) {
      if (trim_space(value.raw_json_token()) != "null") malformed(where, simdjson::N_ATOM_ERROR);
      out_.metadata.reset();
      return;
    }
    if (type != ondemand::json_type::object) {
      invalid(where, "must be an object of strings or null, got " + std::string(type_name(type)));
    }
    ondemand::object object;
    check(value.get_object().get(object), where);
    Metadata metadata;
    for (auto field_result : object) {
      ondemand::field field;
      check(std::move(field_result).get(field), where);
      std::size_t key_at = key_offset(field);
      std::string_view key = unescaped_key(field, where);
      const Where entry{"__metadata__ key", key, ""};
      ondemand::value& item = field.value();
      std::string_view text;
      if (auto error = item.get_string().get(text)) {
        ondemand::json_type item_type = type_of(item, entry);
        if (item_type == ondemand::json_type::string) malformed(entry, error);
        invalid(entry, "value must be a string, got " + std::string(type_name(item_type)));
      }
      refuse_nul(key, entry, false);
      refuse_nul(text, entry, true);
      if (!metadata.emplace(key, text).second) {
        note_duplicate(key_at, entry.describe() + " appears twice");
      }
    }
    out_.metadata = std::move(metadata);
  }

  void read_tensor(std::string_view name, ondemand::value& value, std::size_t offset) {
    Where where{"tensor", name, ""};
    ondemand::object entry;
    if (auto error = value.get_object().get(entry)) {
      if (error != simdjson::INCORRECT_TYPE) malformed(where, error);
      invalid(where,
              "entry must be a JSON object, got " + std::string(type_name(type_of(value, where))));
    }
    TensorEntry info;
    info.name = name;
    info.key_at = static_cast<std::uint32_t>(offset);
    bool has_dtype = false;
    bool has_shape = false;
    bool has_offsets = false;
    unknown_keys_.clear();
    for (auto field_result : entry) {
      ondemand::field field;
      check(std::move(field_result).get(field), where);
      std::size_t key_at = key_offset(field);
      std::string_view key = field_name(field, where);
      where.field = key;
      ondemand::value& item = field.value();
      if (key == "dtype") {
        mark_seen(has_dtype, key_at, where);
        info.dtype = read_dtype(item, where);
      } else if (key == "shape") {
        mark_seen(has_shape, key_at, where);
        if (const std::size_t rank = read_integers(item, where, max_rank); rank > max_rank) {
          fail(ErrorCode::too_many_dimensions, origin_,
               where.describe() + " has " + std::to_string(rank) + " dimensions, more than the " +
                   std::to_string(max_rank) + " this library supports");
        }
        info.shape_at = static_cast<std::uint32_t>(out_.dims.size());
        info.rank = static_cast<std::uint8_t>(integers_.size());
        out_.dims.insert(out_.dims.end(), integers_.begin(), integers_.end());
      } else if (key == "data_offsets") {
        mark_seen(has_offsets, key_at, where);
        if (const std::size_t count = read_integers(item, where, 2); count != 2) {
          invalid(where, "must hold exactly 2 integers [begin, end], got " + std::to_string(count));
        }
        info.data_begin = integers_[0];
        info.data_end = integers_[1];
      } else {
        unknown_keys_.push_back({key, key_at});
        validate_value(item, where, 0);
      }
      where.field = {};
    }
    if (!has_dtype) invalid(where, "missing field `dtype`");
    if (!has_shape) invalid(where, "missing field `shape`");
    if (!has_offsets) invalid(where, "missing field `data_offsets`");
    note_repeated_keys(unknown_keys_, where, "field");
    const std::size_t prefix =
        out_.tensors.empty() ? name.size()
                             : shared_prefix(out_.tensors.front().name, name, out_.name_prefix);
    if (prefix < out_.name_prefix) stale_keys_ = out_.tensors.size();  // made after a longer one
    out_.name_prefix = prefix;
    info.key = name_key(name, prefix);
    out_.tensors.push_back(info);
  }

  void mark_seen(bool& seen, std::size_t key_at, const Where& where) {
    if (seen) note_duplicate(key_at, where.describe() + " appears twice");
    seen = true;
  }

  Dtype read_dtype(ondemand::value& value, const Where& where) const {
    // Dtype names need no escapes: a known one is matched where it stands in the header,
    // saving the unescaping copy; anything else takes the general path and its diagnosis.
    const std::string_view token = trim_space(value.raw_json_token());
    if (token.size() >= 2 && token.front() == '"' && token.back() == '"') {
      if (std::optional<Dtype> dtype = dtype_from_name(token.substr(1, token.size() - 2))) {
        return *dtype;
      }
    }
    std::string_view name;
    if (auto error = value.get_string().get(name)) {
      ondemand::json_type type = type_of(value, where);
      if (type == ondemand::json_type::string) malformed(where, error);
      invalid(where, "must be a string, got " + std::string(type_name(type)));
    }
    if (std::optional<Dtype> dtype = dtype_from_name(name)) return *dtype;
    std::string upper(name);
    for (char& c : upper) c = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
    std::string hint = dtype_from_name(upper) ? " (dtype names are case-sensitive)" : "";
    invalid(where, "unknown dtype " + quote(name) + hint);
  }

  // Checks every element and keeps the first `limit` in integers_, so that memory stays
  // bounded whatever the header holds; returns how many there are.
  std::size_t read_integers(ondemand::value& value, const Where& where, std::size_t limit) {
    ondemand::array array;
    if (auto error = value.get_array().get(array)) {
      if (error != simdjson::INCORRECT_TYPE) malformed(where, error);
      invalid(where, "must be an array of non-negative integers, got " +
                         std::string(type_name(type_of(value, where))));
    }
    integers_.clear();
    std::size_t count = 0;
    for (auto element_result : array) {
      ondemand::value element;
      check(std::move(element_result).get(element), where);
      const std::uint64_t integer = read_u64(element, where, count++);
      if (integers_.size() < limit) integers_.push_back(integer);
    }
    return count;
  }

  std::uint64_t read_u64(ondemand::value& value, const Where& where, std::size_t index) const {
    // simdjson takes plain digits without a leading zero, up to 2^64-1, and leaves the
    // value unread on failure, so anything else falls through to the diagnosis below.
    std::uint64_t fast = 0;
    if (value.get_uint64().get(fast) == simdjson::SUCCESS) return fast;
    ondemand::json_type type = type_of(value, where);
    auto element = [&] { return "element " + std::to_string(index) + " "; };
    if (type != ondemand::json_type::number) {
      invalid(where,
              element() + "must be a non-negative integer, got " + std::string(type_name(type)));
    }
    std::string_view token = trim_space(value.raw_json_token());
    bool digits_only = !token.empty() && std::all_of(token.begin(), token.end(), is_digit);
    if (digits_only && (token[0] != '0' || token.size() == 1)) {
      std::uint64_t result = 0;
      for (char c : token) {
        if (__builtin_mul_overflow(result, std::uint64_t{10}, &result) ||
            __builtin_add_overflow(result, static_cast<std::uint64_t>(c - '0'), &result)) {
          invalid(where, element() + "is " + show_token(token) + ": larger than 2^64-1");
        }
      }
      return result;
    }
    std::string shown = element() + "is " + show_token(token);
    if (!is_json_number(token)) invalid(where, shown + ": not a valid JSON number");
    if (token[0] == '-') invalid(where, shown + ": negative, must be a non-negative integer");
    invalid(where, shown + ": not an integer (no fraction or exponent allowed)");
  }

  // Unknown fields are ignored, but only after checking they are well-formed JSON.
  void validate_value(ondemand::value& value, const Where& where, int depth) {
    switch (type_of(value, where)) {
      case ondemand::json_type::object: {
        if (depth >= max_unknown_depth) too_deep(where);
        ondemand::object object;
        check(value.get_object().get(object), where);
        std::vector<KeyAt> keys;
        for (auto field_result : object) {
          ondemand::field field;
          check(std::move(field_result).get(field), where);
          std::size_t key_at = key_offset(field);
          keys.push_back({unescaped_key(field, where), key_at});
          validate_value(field.value(), where, depth + 1);
        }
        note_repeated_keys(keys, where, "key");
        return;
      }
      case ondemand::json_type::array: {
        if (depth >= max_unknown_depth) too_deep(where);
        ondemand::array array;
        check(value.get_array().get(array), where);
        for (auto element_result : array) {
          ondemand::value element;
          check(std::move(element_result).get(element), where);
          validate_value(element, where, depth + 1);
        }
        return;
      }
      case ondemand::json_type::string: {
        std::string_view ignored;
        check(value.get_string().get(ignored), where);
        return;
      }
      case ondemand::json_type::number: {
        std::string_view token = trim_space(value.raw_json_token());
        if (!is_json_number(token))
          invalid(where, show_token(token) + " is not a valid JSON number");
        return;
      }
      case ondemand::json_type::boolean: {
        std::string_view token = trim_space(value.raw_json_token());
        if (token != "true" && token != "false") malformed(where, simdjson::T_ATOM_ERROR);
        return;
      }
      case ondemand::json_type::null:
        if (trim_space(value.raw_json_token()) != "null") malformed(where, simdjson::N_ATOM_ERROR);
        return;
    }
  }

  [[noreturn]] void too_deep(const Where& where) const {
    invalid(where, "nested more than " + std::to_string(max_unknown_depth) + " levels deep");
  }

  std::string_view origin_;
  const char* base_;
  JsonHeader out_;
  bool seen_metadata_ = false;
  // Entries before this one have keys made for a longer prefix than all names share.
  std::size_t stale_keys_ = 0;
  // Reused across entries, so that an entry costs no allocation of its own.
  std::vector<KeyAt> unknown_keys_;
  std::vector<std::uint64_t> integers_;
};

}  // namespace

JsonHeader read_header_json(std::span<const std::byte> json, std::string_view origin, bool padded) {
  static_assert(json_padding >= simdjson::SIMDJSON_PADDING);
  const auto* text = reinterpret_cast<const char*>(json.data());
  std::unique_ptr<char[]> copy;
  if (!padded) {
    copy.reset(new char[json.size() + json_padding]);
    std::copy_n(text, json.size(), copy.get());
    std::fill_n(copy.get() + json.size(), json_padding, '\0');
  }
  const simdjson::padded_string_view input(padded ? text : copy.get(), json.size(),
                                           json.size() + json_padding);
  thread_local ondemand::parser cached;
  ondemand::parser single_use;  // allocates nothing unless used
  ondemand::parser& parser = json.size() <= max_cached_header ? cached : single_use;
  ondemand::document doc;
  // The parser's first pass checks the UTF-8 of the whole header (rule 4) along with its
  // structure, so the encoding is checked again, on its own, only to name the rule broken.
  if (auto error = parser.iterate(input).get(doc)) {
    if (error == simdjson::UTF8_ERROR || !simdjson::validate_utf8(text, json.size())) {
      fail(ErrorCode::invalid_header_encoding, origin, "header is not valid UTF-8");
    }
    fail(ErrorCode::invalid_header, origin,
         std::string("header is not valid JSON: ") + simdjson::error_message(error));
  }
  JsonHeader header = Reader(origin, input.data()).read(doc, json.size());
  header.text_copy = std::move(copy);
  return header;
}

}  // namespace safetensors::detail
