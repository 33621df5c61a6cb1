// The data-only unpickler. One loop over the opcodes, an explicit value stack and MARK
// stack, and an arena of values: nothing recurses on input-controlled depth and nothing
// imported is ever resolved or called.
#include "pickle/unpickler.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <optional>
#include <unordered_map>

#include "encoding/hex.hpp"
#include "encoding/little_endian.hpp"
#include "encoding/utf8.hpp"
#include "pickle/allowlist.hpp"
#include "pickle/opcodes.hpp"
#include "pickle/unpickler_text.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail::pickle {
namespace {

// Ends the parse: strict mode turns it into an Error, scan mode into a finding.
struct Stop {
  ErrorCode code;
  std::uint64_t offset;
  std::string message;
  bool dangerous;
};

struct Slot {
  ValueId id;
  bool from_memo;  // pushed by GET: STACK_GLOBAL notes operands that did not come literally
};

}  // namespace

std::string_view kind_name(Kind kind) noexcept {
  switch (kind) {
    case Kind::none:
      return "None";
    case Kind::boolean:
      return "bool";
    case Kind::integer:
    case Kind::big_integer:
      return "int";
    case Kind::floating:
      return "float";
    case Kind::string:
      return "str";
    case Kind::bytes:
      return "bytes";
    case Kind::bytearray:
      return "bytearray";
    case Kind::tuple:
      return "tuple";
    case Kind::list:
      return "list";
    case Kind::dict:
      return "dict";
    case Kind::set:
      return "set";
    case Kind::frozenset:
      return "frozenset";
    case Kind::global:
      return "global";
    case Kind::call:
      return "call result";
    case Kind::persistent_id:
      return "persistent id";
  }
  return "value";
}

namespace {

std::string hex_byte(std::uint8_t byte) {
  return hex_number(byte, 2);
}

class Unpickler {
 public:
  Unpickler(std::span<const std::byte> data, const Options& options)
      : data_(reinterpret_cast<const unsigned char*>(data.data())),
        size_(data.size()),
        options_(options) {
    result_.values.emplace_back();  // id 0: the shared None
    opaque_.push_back(false);
  }

  Pickle run(std::string_view origin) {
    try {
      loop();
    } catch (const Stop& stop) {
      if (options_.mode == Mode::strict) {
        std::string message(origin);
        if (!message.empty()) message += ": ";
        throw Error(stop.code,
                    message + "offset " + std::to_string(stop.offset) + ": " + stop.message);
      }
      result_.findings.push_back({stop.offset, stop.message, stop.dangerous});
    } catch (const std::bad_alloc&) {
      if (options_.mode == Mode::strict) throw;
      result_.findings.push_back({op_offset_, "out of memory while reading the pickle", false});
    }
    return std::move(result_);
  }

 private:
  // ---- errors ---------------------------------------------------------------------------

  [[noreturn]] void malformed(std::string message) const {
    throw Stop{ErrorCode::invalid_pickle, op_offset_, std::move(message), false};
  }

  // Something a loader would act on: fatal in strict mode, a dangerous finding in scan mode.
  void forbid(std::string message) {
    if (options_.mode == Mode::strict) {
      throw Stop{ErrorCode::forbidden_pickle, op_offset_, std::move(message), true};
    }
    result_.findings.push_back({op_offset_, std::move(message), true});
  }

  void note(std::string message) {
    if (options_.mode == Mode::scan)
      result_.findings.push_back({op_offset_, std::move(message), false});
  }

  std::string opcode_text() const {
    return std::string(op::name(opcode_)) + " (" + hex_byte(opcode_) + ")";
  }

  // ---- input ----------------------------------------------------------------------------

  std::uint64_t limit() const noexcept { return in_frame_ ? frame_end_ : size_; }

  const unsigned char* take(std::uint64_t n) {
    if (n > limit() - pos_) {
      if (in_frame_ && n <= size_ - pos_) {
        malformed(opcode_text() + " needs " + std::to_string(n) +
                  " bytes, which cross the end of the frame at offset " +
                  std::to_string(frame_end_));
      }
      malformed(opcode_text() + " needs " + std::to_string(n) + " bytes but only " +
                std::to_string(size_ - pos_) + " are left");
    }
    const unsigned char* p = data_ + pos_;
    pos_ += n;
    return p;
  }

  std::uint64_t read_le(unsigned width) {
    return load_le_bytes(std::span<const unsigned char>(take(width), width));
  }

  // A length prefix: checked against the bytes left before anything is allocated.
  std::string_view read_counted(unsigned width, bool is_signed = false) {
    std::uint64_t n = read_le(width);
    if (is_signed && width == 4 && (n & 0x80000000u) != 0) {
      malformed(opcode_text() + " has a negative length");
    }
    return read_view(n);
  }

  std::string_view read_view(std::uint64_t n) {
    return {reinterpret_cast<const char*>(take(n)), static_cast<std::size_t>(n)};
  }

  // The argument of a text opcode, without its newline.
  std::string_view read_line() {
    const std::uint64_t end = limit();
    const void* nl = std::memchr(data_ + pos_, '\n', static_cast<std::size_t>(end - pos_));
    if (nl == nullptr) {
      malformed(opcode_text() + (in_frame_ ? " argument crosses the end of the frame at offset " +
                                                 std::to_string(frame_end_)
                                           : std::string(" argument has no terminating newline")));
    }
    const auto length =
        static_cast<std::uint64_t>(static_cast<const unsigned char*>(nl) - (data_ + pos_));
    std::string_view line = read_view(length);
    ++pos_;
    return line;
  }

  // ---- values ---------------------------------------------------------------------------

  ValueId add(Value value, bool opaque = false) {
    if (result_.values.size() >= options_.max_values) {
      malformed("more than " + std::to_string(options_.max_values) + " values");
    }
    value.offset = op_offset_;
    result_.values.push_back(std::move(value));
    opaque_.push_back(opaque);
    return static_cast<ValueId>(result_.values.size() - 1);
  }

  Value& at(ValueId id) { return result_.values[id]; }

  ValueId add_scalar(Kind kind) {
    Value v;
    v.kind = kind;
    return add(std::move(v));
  }

  ValueId add_integer(std::int64_t n) {
    Value v;
    v.kind = Kind::integer;
    v.integer = n;
    return add(std::move(v));
  }

  // Two's-complement little-endian bytes of any length.
  ValueId add_long(std::string bytes) {
    std::string canonical = canonical_twos_complement(std::move(bytes));
    if (auto small = to_int64(canonical)) return add_integer(*small);
    Value v;
    v.kind = Kind::big_integer;
    v.text = std::move(canonical);
    return add(std::move(v));
  }

  ValueId add_text(Kind kind, std::string_view text) {
    Value v;
    v.kind = kind;
    v.text.assign(text);
    return add(std::move(v));
  }

  ValueId add_container(Kind kind, std::vector<ValueId> items = {}) {
    Value v;
    v.kind = kind;
    v.items = std::move(items);
    return add(std::move(v));
  }

  // A placeholder for what a refused opcode would have produced, so scan mode can go on.
  ValueId add_opaque() {
    Value v;
    v.kind = Kind::global;
    return add(std::move(v), true);
  }

  // True for a value a loader would have computed by calling something we do not allow:
  // scan mode lets operations on it pass, as they are already reported.
  bool opaque(ValueId id) const { return opaque_[id]; }

  bool is_ordered_dict(ValueId id) {
    const Value& v = at(id);
    if (v.kind != Kind::call || opaque(id)) return false;
    const Value& callee = at(v.callee);
    return callee.module == "collections" && callee.name == "OrderedDict";
  }

  // ---- stack ----------------------------------------------------------------------------

  std::size_t fence() const noexcept { return marks_.empty() ? 0 : marks_.back(); }

  void push(ValueId id, bool from_memo = false) {
    if (stack_.size() + marks_.size() >= options_.max_stack_depth) {
      malformed("the stack grows beyond " + std::to_string(options_.max_stack_depth) + " entries");
    }
    stack_.push_back({id, from_memo});
  }

  Slot pop_slot() {
    if (stack_.size() <= fence()) malformed(opcode_text() + " pops from an empty stack");
    const Slot slot = stack_.back();
    stack_.pop_back();
    return slot;
  }

  ValueId pop() { return pop_slot().id; }

  ValueId top() {
    if (stack_.size() <= fence()) malformed(opcode_text() + " needs a value on the stack");
    return stack_.back().id;
  }

  std::vector<ValueId> pop_mark() {
    if (marks_.empty()) malformed(opcode_text() + " without a MARK");
    std::vector<ValueId> items;
    items.reserve(stack_.size() - marks_.back());
    for (std::size_t i = marks_.back(); i < stack_.size(); ++i) items.push_back(stack_[i].id);
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }

  // ---- dict and set keys ----------------------------------------------------------------

  // The key under which Python would find `id` in a dict or set, for the hashable values
  // whose equality we can decide; nullopt for others (tuples, calls...), which are kept.
  std::optional<std::string> key_of(ValueId id) {
    const Value& v = at(id);
    switch (v.kind) {
      case Kind::none:
        return "n";
      case Kind::boolean:
        return v.boolean ? "i:1" : "i:0";
      case Kind::integer:
        return "i:" + std::to_string(v.integer);
      case Kind::big_integer:
        return "I:" + v.text;
      case Kind::floating: {
        const double d = v.floating;
        if (std::isnan(d)) return std::nullopt;
        if (d == std::trunc(d) && std::fabs(d) < 9.2e18) {
          return "i:" + std::to_string(static_cast<std::int64_t>(d));  // 1.0 == 1 == True
        }
        return "f:" + std::to_string(std::bit_cast<std::uint64_t>(d));
      }
      case Kind::string:
        return "s:" + v.text;
      case Kind::bytes:
        return "b:" + v.text;
      case Kind::bytearray:
      case Kind::list:
      case Kind::dict:
      case Kind::set:
        malformed(opcode_text() + " uses an unhashable " + std::string(kind_name(v.kind)) +
                  " as a key");
      default:
        return std::nullopt;
    }
  }

  // dict[key] = value with Python's semantics: an existing key keeps its place.
  void dict_set(ValueId dict, ValueId key, ValueId value) {
    const auto k = key_of(key);
    auto& items = at(dict).items;
    if (k) {
      auto [it, inserted] = keys_[dict].try_emplace(*k, items.size());
      if (!inserted) {
        items[it->second + 1] = value;
        return;
      }
    }
    items.push_back(key);
    items.push_back(value);
  }

  void set_add(ValueId set, ValueId item) {
    const auto k = key_of(item);
    auto& items = at(set).items;
    if (k && !keys_[set].try_emplace(*k, items.size()).second) return;
    items.push_back(item);
  }

  // ---- memo -----------------------------------------------------------------------------

  void memo_put(std::uint64_t key) {
    const ValueId id = top();
    if (!memo_.contains(key) && memo_.size() >= options_.max_memo_entries) {
      malformed("the memo grows beyond " + std::to_string(options_.max_memo_entries) + " entries");
    }
    memo_[key] = id;
  }

  void memo_get(std::uint64_t key) {
    const auto it = memo_.find(key);
    if (it == memo_.end())
      malformed(opcode_text() + " of memo key " + std::to_string(key) + ", which was never stored");
    push(it->second, true);
  }

  std::uint64_t text_memo_key() {
    const std::string_view line = read_line();
    // Python reads memo keys with int(text) in base 10, where leading zeros are fine.
    const auto bytes = parse_decimal(line, true);
    if (!bytes) malformed(opcode_text() + " argument is not a decimal integer");
    if (!bytes->empty() && (static_cast<unsigned char>(bytes->back()) & 0x80) != 0) {
      malformed(opcode_text() + " has a negative memo key");
    }
    if (bytes->size() > 8) malformed(opcode_text() + " memo key does not fit in 63 bits");
    return load_le_bytes(std::span<const char>(*bytes));
  }

  // ---- globals and calls ----------------------------------------------------------------

  bool allowed(std::string_view module, std::string_view name) const {
    return options_.allowed ? options_.allowed(module, name) : is_allowed_global(module, name);
  }

  void push_global(std::string_view module, std::string_view name) {
    const bool valid = is_module_path(module) && is_identifier(name);
    // Protocols 0-2 come from Python 2, whose builtins lived in __builtin__; CPython maps it.
    const std::string_view resolved = proto_ < 3 && module == "__builtin__" ? "builtins" : module;
    const bool ok = valid && allowed(resolved, name);
    const std::string full = std::string(module) + "." + std::string(name);
    result_.globals.push_back({std::string(module), std::string(name), op_offset_, ok});
    if (!valid) {
      forbid("global `" + full +
             "` is not a plain module and name (a dotted or odd name reaches other objects)");
    } else if (!ok) {
      forbid(is_known_unsupported_global(resolved, name)
                 ? "global `" + full +
                       "` is not supported (quantized, sparse, subclass or "
                       "TorchScript data)"
                 : "global `" + full + "` is not allowed (only tensor data is)");
    }
    Value v;
    v.kind = Kind::global;
    v.module.assign(resolved);
    v.name.assign(name);
    push(add(std::move(v), !ok));
  }

  void stack_global() {
    const Slot name = pop_slot();
    const Slot module = pop_slot();
    const Value& m = at(module.id);
    const Value& n = at(name.id);
    if (m.kind != Kind::string || n.kind != Kind::string) {
      forbid("STACK_GLOBAL needs two str operands pushed as literals, got " +
             std::string(kind_name(m.kind)) + " and " + std::string(kind_name(n.kind)));
      push(add_opaque());
      return;
    }
    if (module.from_memo || name.from_memo) {
      note("STACK_GLOBAL takes its module or name from the memo (`" + m.text + "." + n.text + "`)");
    }
    push_global(std::string(m.text), std::string(n.text));
  }

  // REDUCE and NEWOBJ: record the call, never make it.
  void call() {
    const ValueId args = pop();
    const ValueId callee = pop();
    if (opaque(callee) || opaque(args)) {
      Value v;
      v.kind = Kind::call;
      v.callee = callee;
      v.args = args;
      push(add(std::move(v), true));
      return;
    }
    if (at(callee).kind != Kind::global) {
      forbid(opcode_text() + " calls a " + std::string(kind_name(at(callee).kind)) +
             " (only an allowed global may be called)");
      push(add_opaque());
      return;
    }
    if (at(args).kind != Kind::tuple) {
      malformed(opcode_text() + " arguments of `" + at(callee).module + "." + at(callee).name +
                "` are a " + std::string(kind_name(at(args).kind)) + ", not a tuple");
    }
    Value v;
    v.kind = Kind::call;
    v.callee = callee;
    v.args = args;
    push(add(std::move(v)));
  }

  void build() {
    const ValueId state = pop();
    const ValueId target = top();
    Value& t = at(target);
    if (opaque(target)) return;
    if (t.kind == Kind::global) {
      forbid("BUILD on global `" + t.module + "." + t.name +
             "` (it would set attributes of a module or class)");
      return;
    }
    if (t.kind != Kind::call && t.kind != Kind::dict) {
      malformed("BUILD on a " + std::string(kind_name(t.kind)) +
                " (only on a call result or a dict)");
    }
    if (t.state != 0)
      malformed("BUILD applied twice to the value made at offset " + std::to_string(t.offset));
    t.state = state;
  }

  // ---- containers -----------------------------------------------------------------------

  // The container below the operands of APPEND(S)/SETITEM(S)/ADDITEMS; false when it is
  // opaque and the operation is to be skipped.
  bool check_target(ValueId target, bool ok, std::string_view expected) {
    if (ok) return true;
    if (opaque(target)) return false;
    malformed(opcode_text() + " on a " + std::string(kind_name(at(target).kind)) + ", not a " +
              std::string(expected));
  }

  void append(const std::vector<ValueId>& items) {
    const ValueId list = top();
    if (!check_target(list, at(list).kind == Kind::list, "list")) return;
    auto& dest = at(list).items;
    dest.insert(dest.end(), items.begin(), items.end());
  }

  void set_items(const std::vector<ValueId>& items) {
    if (items.size() % 2 != 0) malformed(opcode_text() + " with an odd number of items");
    const ValueId dict = top();
    if (!check_target(dict, at(dict).kind == Kind::dict || is_ordered_dict(dict), "dict")) return;
    for (std::size_t i = 0; i < items.size(); i += 2) dict_set(dict, items[i], items[i + 1]);
  }

  void make_dict(const std::vector<ValueId>& items) {
    if (items.size() % 2 != 0) malformed("DICT with an odd number of items");
    const ValueId dict = add_container(Kind::dict);
    for (std::size_t i = 0; i < items.size(); i += 2) dict_set(dict, items[i], items[i + 1]);
    push(dict);
  }

  void fill_set(ValueId set, const std::vector<ValueId>& items) {
    for (ValueId item : items) set_add(set, item);
  }

  ValueId make_tuple(std::size_t n) {
    std::vector<ValueId> items(n);
    for (std::size_t i = n; i-- > 0;) items[i] = pop();
    return add_container(Kind::tuple, std::move(items));
  }

  // ---- refused opcodes ------------------------------------------------------------------

  // Applies the stack effect of a refused opcode so scan mode can report what follows.
  void refused() {
    forbid("opcode " + opcode_text() + " is not allowed (only data opcodes are)");
    switch (opcode_) {
      case op::INST: {
        const std::string module(read_line());
        const std::string name(read_line());
        push_global(module, name);
        const ValueId cls = pop();
        Value v;
        v.kind = Kind::call;
        v.callee = cls;
        v.args = add_container(Kind::tuple, pop_mark());
        push(add(std::move(v), true));
        break;
      }
      case op::OBJ:
        if (pop_mark().empty()) malformed("OBJ without a class");
        push(add_opaque());
        break;
      case op::EXT1:
      case op::EXT2:
      case op::EXT4:
        take(opcode_ == op::EXT1 ? 1 : opcode_ == op::EXT2 ? 2 : 4);
        push(add_opaque());
        break;
      case op::NEWOBJ_EX:
        pop();
        pop();
        pop();
        push(add_opaque());
        break;
      case op::PERSID:
        read_line();
        push(add_opaque());
        break;
      case op::NEXT_BUFFER:
        push(add_opaque());
        break;
      case op::READONLY_BUFFER:
        top();
        break;
      case op::DUP:
        push(top());
        break;
      default:
        break;
    }
  }

  // ---- the loop -------------------------------------------------------------------------

  void loop() {
    while (true) {
      if (in_frame_ && pos_ == frame_end_) in_frame_ = false;
      op_offset_ = pos_;
      if (pos_ >= size_) malformed("the pickle ends without STOP");
      opcode_ = *take(1);
      if (step()) return;
    }
  }

  // One opcode; true after STOP.
  bool step() {
    switch (opcode_) {
      case op::PROTO: {
        const unsigned proto = *take(1);
        if (proto > 5) malformed("unsupported pickle protocol " + std::to_string(proto));
        proto_ = static_cast<int>(proto);
        break;
      }
      case op::FRAME: {
        if (in_frame_)
          malformed("FRAME before the end of the frame at offset " + std::to_string(frame_end_));
        const std::uint64_t length = read_le(8);
        if (length > size_ - pos_) {
          malformed("FRAME of " + std::to_string(length) + " bytes but only " +
                    std::to_string(size_ - pos_) + " are left");
        }
        in_frame_ = true;
        frame_end_ = pos_ + length;
        break;
      }
      case op::STOP:
        result_.root = pop();
        result_.end_offset = pos_;
        result_.complete = true;
        return true;
      case op::MARK:
        if (stack_.size() + marks_.size() >= options_.max_stack_depth) {
          malformed("the stack grows beyond " + std::to_string(options_.max_stack_depth) +
                    " entries");
        }
        marks_.push_back(stack_.size());
        break;
      case op::POP:
        // CPython pops a MARK when it is the newest thing on the stack.
        if (!marks_.empty() && marks_.back() == stack_.size()) {
          marks_.pop_back();
        } else {
          pop();
        }
        break;
      case op::POP_MARK:
        pop_mark();
        break;
      case op::NONE:
        push(0);
        break;
      case op::NEWTRUE:
      case op::NEWFALSE: {
        Value v;
        v.kind = Kind::boolean;
        v.boolean = opcode_ == op::NEWTRUE;
        push(add(std::move(v)));
        break;
      }
      case op::INT: {
        const std::string_view line = read_line();
        if (line == "00" || line == "01") {  // protocol 0 spelling of False/True
          Value v;
          v.kind = Kind::boolean;
          v.boolean = line == "01";
          push(add(std::move(v)));
          break;
        }
        auto bytes = parse_decimal(line);
        if (!bytes) malformed("INT argument is not a decimal integer");
        push(add_long(std::move(*bytes)));
        break;
      }
      case op::LONG: {
        std::string_view line = read_line();
        if (!line.empty() && line.back() == 'L') line.remove_suffix(1);
        auto bytes = parse_decimal(line);
        if (!bytes) malformed("LONG argument is not a decimal integer");
        push(add_long(std::move(*bytes)));
        break;
      }
      case op::BININT:
        push(add_integer(static_cast<std::int32_t>(static_cast<std::uint32_t>(read_le(4)))));
        break;
      case op::BININT1:
        push(add_integer(static_cast<std::int64_t>(read_le(1))));
        break;
      case op::BININT2:
        push(add_integer(static_cast<std::int64_t>(read_le(2))));
        break;
      case op::LONG1:
        push(add_long(std::string(read_counted(1))));
        break;
      case op::LONG4:
        push(add_long(std::string(read_counted(4, true))));
        break;
      case op::FLOAT: {
        const auto value = parse_float(read_line());
        if (!value) malformed("FLOAT argument is not a number");
        Value v;
        v.kind = Kind::floating;
        v.floating = *value;
        push(add(std::move(v)));
        break;
      }
      case op::BINFLOAT: {
        const unsigned char* p = take(8);
        std::uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];  // big-endian
        Value v;
        v.kind = Kind::floating;
        v.floating = std::bit_cast<double>(bits);
        push(add(std::move(v)));
        break;
      }
      case op::STRING: {
        const auto text = decode_quoted_string(read_line());
        if (!text) malformed("STRING argument is not a quoted, correctly escaped string");
        push(add_text(Kind::bytes, *text));
        break;
      }
      case op::BINSTRING:
        push(add_text(Kind::bytes, read_counted(4, true)));
        break;
      case op::SHORT_BINSTRING:
      case op::SHORT_BINBYTES:
        push(add_text(Kind::bytes, read_counted(1)));
        break;
      case op::BINBYTES:
        push(add_text(Kind::bytes, read_counted(4)));
        break;
      case op::BINBYTES8:
        push(add_text(Kind::bytes, read_counted(8)));
        break;
      case op::BYTEARRAY8:
        push(add_text(Kind::bytearray, read_counted(8)));
        break;
      case op::UNICODE: {
        const auto text = decode_raw_unicode_escape(read_line());
        if (!text) malformed("UNICODE argument has a malformed \\u escape");
        push(add_text(Kind::string, *text));
        break;
      }
      case op::SHORT_BINUNICODE:
      case op::BINUNICODE:
      case op::BINUNICODE8: {
        const unsigned width = opcode_ == op::SHORT_BINUNICODE ? 1
                               : opcode_ == op::BINUNICODE     ? 4
                                                               : 8;
        const std::string_view text = read_counted(width);
        // CPython decodes these with 'surrogatepass': encoded surrogates are text too.
        if (!is_utf8(text, Surrogates::accept))
          malformed(opcode_text() + " string is not valid UTF-8");
        push(add_text(Kind::string, text));
        break;
      }
      case op::EMPTY_TUPLE:
        push(add_container(Kind::tuple));
        break;
      case op::TUPLE1:
      case op::TUPLE2:
      case op::TUPLE3:
        push(make_tuple(static_cast<std::size_t>(opcode_ - op::TUPLE1 + 1)));
        break;
      case op::TUPLE:
        push(add_container(Kind::tuple, pop_mark()));
        break;
      case op::EMPTY_LIST:
        push(add_container(Kind::list));
        break;
      case op::LIST:
        push(add_container(Kind::list, pop_mark()));
        break;
      case op::APPEND: {
        const ValueId item = pop();
        append({item});
        break;
      }
      case op::APPENDS:
        append(pop_mark());
        break;
      case op::EMPTY_DICT:
        push(add_container(Kind::dict));
        break;
      case op::DICT:
        make_dict(pop_mark());
        break;
      case op::SETITEM: {
        const ValueId value = pop();
        const ValueId key = pop();
        set_items({key, value});
        break;
      }
      case op::SETITEMS:
        set_items(pop_mark());
        break;
      case op::EMPTY_SET:
        push(add_container(Kind::set));
        break;
      case op::ADDITEMS: {
        const std::vector<ValueId> items = pop_mark();
        const ValueId set = top();
        if (check_target(set, at(set).kind == Kind::set, "set")) fill_set(set, items);
        break;
      }
      case op::FROZENSET: {
        const std::vector<ValueId> items = pop_mark();
        const ValueId set = add_container(Kind::frozenset);
        fill_set(set, items);
        push(set);
        break;
      }
      case op::PUT:
        memo_put(text_memo_key());
        break;
      case op::BINPUT:
        memo_put(read_le(1));
        break;
      case op::LONG_BINPUT:
        memo_put(read_le(4));
        break;
      case op::MEMOIZE:
        memo_put(memo_.size());
        break;
      case op::GET:
        memo_get(text_memo_key());
        break;
      case op::BINGET:
        memo_get(read_le(1));
        break;
      case op::LONG_BINGET:
        memo_get(read_le(4));
        break;
      case op::GLOBAL: {
        const std::string_view module = read_line();
        const std::string_view name = read_line();
        if (!is_utf8(module) || !is_utf8(name)) {
          malformed("GLOBAL names are not valid UTF-8");
        }
        push_global(module, name);
        break;
      }
      case op::STACK_GLOBAL:
        stack_global();
        break;
      case op::REDUCE:
      case op::NEWOBJ:
        call();
        break;
      case op::BUILD:
        build();
        break;
      case op::BINPERSID: {
        Value v;
        v.kind = Kind::persistent_id;
        v.args = pop();
        const bool hidden = opaque(v.args);
        push(add(std::move(v), hidden));
        break;
      }
      default:
        if (op::is_refused(opcode_)) {
          refused();
          break;
        }
        throw Stop{ErrorCode::forbidden_pickle, op_offset_,
                   "unknown opcode " + hex_byte(opcode_) + " (not a pickle, or a newer protocol)",
                   false};
    }
    return false;
  }

  const unsigned char* data_;
  std::uint64_t size_;
  const Options& options_;
  std::uint64_t pos_ = 0;
  bool in_frame_ = false;
  std::uint64_t frame_end_ = 0;
  std::uint64_t op_offset_ = 0;
  std::uint8_t opcode_ = 0;
  int proto_ = 0;
  Pickle result_;
  std::vector<bool> opaque_;
  std::vector<Slot> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint64_t, ValueId> memo_;
  // Per dict or set: Python-equality key -> index in `items`, so duplicates replace.
  std::unordered_map<ValueId, std::unordered_map<std::string, std::size_t>> keys_;
};

}  // namespace

Pickle unpickle(std::span<const std::byte> data, const Options& options, std::string_view origin) {
  return Unpickler(data, options).run(origin);
}

}  // namespace safetensors::detail::pickle
