#include "pickle/opcodes.hpp"

namespace safetensors::detail::pickle::op {

namespace {

struct Named {
  std::uint8_t opcode;
  std::string_view name;
};

constexpr Named names[] = {
    {MARK, "MARK"},
    {STOP, "STOP"},
    {POP, "POP"},
    {POP_MARK, "POP_MARK"},
    {DUP, "DUP"},
    {FLOAT, "FLOAT"},
    {INT, "INT"},
    {BININT, "BININT"},
    {BININT1, "BININT1"},
    {LONG, "LONG"},
    {BININT2, "BININT2"},
    {NONE, "NONE"},
    {PERSID, "PERSID"},
    {BINPERSID, "BINPERSID"},
    {REDUCE, "REDUCE"},
    {STRING, "STRING"},
    {BINSTRING, "BINSTRING"},
    {SHORT_BINSTRING, "SHORT_BINSTRING"},
    {UNICODE, "UNICODE"},
    {BINUNICODE, "BINUNICODE"},
    {APPEND, "APPEND"},
    {BUILD, "BUILD"},
    {GLOBAL, "GLOBAL"},
    {DICT, "DICT"},
    {EMPTY_DICT, "EMPTY_DICT"},
    {APPENDS, "APPENDS"},
    {GET, "GET"},
    {BINGET, "BINGET"},
    {INST, "INST"},
    {LONG_BINGET, "LONG_BINGET"},
    {LIST, "LIST"},
    {EMPTY_LIST, "EMPTY_LIST"},
    {OBJ, "OBJ"},
    {PUT, "PUT"},
    {BINPUT, "BINPUT"},
    {LONG_BINPUT, "LONG_BINPUT"},
    {SETITEM, "SETITEM"},
    {TUPLE, "TUPLE"},
    {EMPTY_TUPLE, "EMPTY_TUPLE"},
    {SETITEMS, "SETITEMS"},
    {BINFLOAT, "BINFLOAT"},
    {PROTO, "PROTO"},
    {NEWOBJ, "NEWOBJ"},
    {EXT1, "EXT1"},
    {EXT2, "EXT2"},
    {EXT4, "EXT4"},
    {TUPLE1, "TUPLE1"},
    {TUPLE2, "TUPLE2"},
    {TUPLE3, "TUPLE3"},
    {NEWTRUE, "NEWTRUE"},
    {NEWFALSE, "NEWFALSE"},
    {LONG1, "LONG1"},
    {LONG4, "LONG4"},
    {BINBYTES, "BINBYTES"},
    {SHORT_BINBYTES, "SHORT_BINBYTES"},
    {SHORT_BINUNICODE, "SHORT_BINUNICODE"},
    {BINUNICODE8, "BINUNICODE8"},
    {BINBYTES8, "BINBYTES8"},
    {EMPTY_SET, "EMPTY_SET"},
    {ADDITEMS, "ADDITEMS"},
    {FROZENSET, "FROZENSET"},
    {NEWOBJ_EX, "NEWOBJ_EX"},
    {STACK_GLOBAL, "STACK_GLOBAL"},
    {MEMOIZE, "MEMOIZE"},
    {FRAME, "FRAME"},
    {BYTEARRAY8, "BYTEARRAY8"},
    {NEXT_BUFFER, "NEXT_BUFFER"},
    {READONLY_BUFFER, "READONLY_BUFFER"},
};

}  // namespace

std::string_view name(std::uint8_t opcode) noexcept {
  for (const Named& entry : names) {
    if (entry.opcode == opcode) return entry.name;
  }
  return "";
}

bool is_refused(std::uint8_t opcode) noexcept {
  switch (opcode) {
    case INST:
    case OBJ:
    case EXT1:
    case EXT2:
    case EXT4:
    case NEWOBJ_EX:
    case PERSID:
    case NEXT_BUFFER:
    case READONLY_BUFFER:
    case DUP:
      return true;
    default:
      return false;
  }
}

bool can_start_pickle(std::uint8_t opcode) noexcept {
  switch (opcode) {
    case PROTO:
    case MARK:
    case FLOAT:
    case INT:
    case BININT:
    case BININT1:
    case LONG:
    case BININT2:
    case NONE:
    case STRING:
    case BINSTRING:
    case SHORT_BINSTRING:
    case UNICODE:
    case BINUNICODE:
    case GLOBAL:
    case EMPTY_DICT:
    case EMPTY_LIST:
    case EMPTY_TUPLE:
    case BINFLOAT:
      return true;
    default:
      return false;
  }
}

}  // namespace safetensors::detail::pickle::op
