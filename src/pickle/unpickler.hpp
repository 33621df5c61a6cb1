// A data-only unpickler: it builds values and never calls anything. Globals are recorded as
// references; REDUCE/NEWOBJ on an allowed global produce an inert `call` node that the
// caller (the torch checkpoint reader) interprets. Private to the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace safetensors::detail::pickle {

/// Index of a value in `Pickle::values`. Values refer to each other by id, so shared and
/// even cyclic structures (possible through the memo) need no reference counting.
using ValueId = std::uint32_t;

enum class Kind : std::uint8_t {
  none,
  boolean,
  integer,      // fits in int64: `integer`
  big_integer,  // LONG/LONG1/LONG4 beyond int64: two's-complement little-endian in `text`
  floating,
  string,         // unicode, UTF-8 in `text`
  bytes,          // BINBYTES/SHORT_BINBYTES/BINSTRING (protocol-2 str) in `text`
  bytearray,      // BYTEARRAY8 in `text`
  tuple,          // `items`
  list,           // `items`
  dict,           // `items` holds key, value, key, value ... in insertion order
  set,            // `items`
  frozenset,      // `items`
  global,         // an imported name, never resolved: `module`, `name`
  call,           // REDUCE or NEWOBJ: `callee` (a global) applied to `args` (a tuple)
  persistent_id,  // BINPERSID: `args` is the pid value (torch: a tuple describing a storage)
};

/// The Python type name of a kind ("int", "str", "dict"...), for messages.
std::string_view kind_name(Kind kind) noexcept;

struct Value {
  Kind kind = Kind::none;
  bool boolean = false;
  std::int64_t integer = 0;
  double floating = 0;
  std::string text;
  std::vector<ValueId> items;
  std::string module;
  std::string name;
  ValueId callee = 0;
  ValueId args = 0;
  /// BUILD's state, applied to a `call` or dict value; 0 = none (id 0 is always None).
  ValueId state = 0;
  /// Byte offset of the opcode that created this value, for messages.
  std::uint64_t offset = 0;
};

/// A global the pickle imports, where, and whether the allowlist accepts it.
struct GlobalRef {
  std::string module;
  std::string name;
  std::uint64_t offset = 0;
  bool allowed = false;
};

/// Something a scanner should report: an opcode outside the data set, a computed or
/// dotted STACK_GLOBAL, BUILD on a non-inert value, a malformed structure...
struct Finding {
  std::uint64_t offset = 0;
  std::string message;
  bool dangerous = false;  // false: merely malformed or unusual
};

enum class Mode : std::uint8_t {
  strict,  // throw Error(forbidden_pickle / invalid_pickle) at the first problem
  scan,    // record globals and findings, keep going as far as the bytes allow
};

using Allowlist = std::function<bool(std::string_view module, std::string_view name)>;

struct Options {
  Mode mode = Mode::strict;
  /// Which globals may be imported; see allowlist.hpp for the converter's list.
  Allowlist allowed;
  /// Bounds that keep hostile input from exhausting memory (the memo is a map, so a huge
  /// memo index costs nothing by itself).
  std::uint64_t max_memo_entries = 1u << 24;
  std::uint64_t max_values = 1u << 26;
  std::uint64_t max_stack_depth = 1u << 20;
};

/// The result: an arena of values (id 0 is a shared None) and the root.
struct Pickle {
  std::vector<Value> values;
  ValueId root = 0;
  /// Offset just past the STOP opcode (legacy torch files hold several pickles in a row).
  std::uint64_t end_offset = 0;
  std::vector<GlobalRef> globals;
  std::vector<Finding> findings;  // always empty in strict mode (it throws instead)
  bool complete = false;          // STOP reached (scan mode may stop early)

  const Value& at(ValueId id) const { return values.at(id); }
};

/// Parses one pickle (protocols 0-5) starting at data[0]. In strict mode, bytes after STOP
/// are left to the caller (see `end_offset`). Accepts only the data opcodes listed in
/// docs/CHECKPOINTS.md; refuses INST, OBJ, EXT*, NEWOBJ_EX, PERSID, NEXT_BUFFER,
/// READONLY_BUFFER, DUP and unknown opcodes. Error messages name `origin`, the opcode and
/// its byte offset.
[[nodiscard]] Pickle unpickle(std::span<const std::byte> data, const Options& options,
                              std::string_view origin);

}  // namespace safetensors::detail::pickle
