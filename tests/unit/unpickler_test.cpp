// The data-only unpickler: every opcode from hand-assembled bytes, CPython's own pickles of
// plain data at protocols 0-5 compared structurally, and every refusal and attack shape.
#include <gtest/gtest.h>

#include <bit>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../../src/pickle/allowlist.hpp"
#include "../../src/pickle/unpickler.hpp"
#include "python_fixtures.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail::pickle {
namespace {

// Pickle bytes assembled opcode by opcode (string literals with \x escapes swallow the hex
// digits that follow, so bytes are appended one call at a time).
class Bytes {
 public:
  Bytes& op(unsigned char c) {
    bytes_.push_back(static_cast<std::byte>(c));
    return *this;
  }
  Bytes& raw(std::string_view s) {
    for (char c : s) op(static_cast<unsigned char>(c));
    return *this;
  }
  Bytes& le(std::uint64_t v, int width) {
    for (int i = 0; i < width; ++i) op(static_cast<unsigned char>(v >> (8 * i)));
    return *this;
  }
  Bytes& line(std::string_view s) { return raw(s).op('\n'); }
  Bytes& proto(unsigned p) { return op(0x80).op(static_cast<unsigned char>(p)); }
  Bytes& short_unicode(std::string_view s) { return op(0x8c).le(s.size(), 1).raw(s); }
  Bytes& binunicode(std::string_view s) { return op('X').le(s.size(), 4).raw(s); }
  Bytes& global(std::string_view module, std::string_view name) {
    return op('c').line(module).line(name);
  }
  Bytes& stop() { return op('.'); }
  std::span<const std::byte> span() const { return bytes_; }
  std::size_t size() const { return bytes_.size(); }

 private:
  std::vector<std::byte> bytes_;
};

Pickle strict(const Bytes& b, std::string_view origin = "test.pkl") {
  return unpickle(b.span(), Options{}, origin);
}

Pickle scan(const Bytes& b) {
  Options options;
  options.mode = Mode::scan;
  return unpickle(b.span(), options, "test.pkl");
}

// The error a strict parse throws; fails the test when it does not throw.
Error strict_error(const Bytes& b, std::string_view origin = "test.pkl") {
  try {
    strict(b, origin);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no error";
  return Error(ErrorCode::io, "");
}

void expect_error(const Bytes& b, ErrorCode code, std::string_view fragment) {
  const Error e = strict_error(b);
  EXPECT_EQ(e.code(), code) << e.what();
  EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
}

std::string hex(std::string_view bytes) {
  std::string out;
  char buf[3];
  for (char c : bytes) {
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned char>(c));
    out += buf;
  }
  return out;
}

// Code points of UTF-8 text, each below 256, as bytes: what `s.encode('latin1')` gives.
std::string latin1(std::string_view utf8) {
  std::string out;
  for (std::size_t i = 0; i < utf8.size(); ++i) {
    const auto c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(((c & 0x1F) << 6) | (static_cast<unsigned char>(utf8[++i]) & 0x3F));
    }
  }
  return out;
}

std::string describe(const Pickle& p, ValueId id);

std::string describe_items(const Pickle& p, const std::vector<ValueId>& items, bool pairs) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i != 0) out += pairs && i % 2 == 1 ? ":" : ",";
    out += describe(p, items[i]);
  }
  return out;
}

// The same text make_data_pickles.py's describe() writes for a Python value. Calls that
// protocols 0-3 use to rebuild bytes, bytearrays and sets are read back as those values.
std::string describe(const Pickle& p, ValueId id) {
  const Value& v = p.at(id);
  switch (v.kind) {
    case Kind::none:
      return "N";
    case Kind::boolean:
      return v.boolean ? "T" : "F";
    case Kind::integer:
      return "i" + std::to_string(v.integer);
    case Kind::big_integer:
      return "I" + hex(v.text);
    case Kind::floating: {
      if (std::isnan(v.floating)) return "fnan";
      char buf[17];
      std::snprintf(buf, sizeof buf, "%016llx",
                    static_cast<unsigned long long>(std::bit_cast<std::uint64_t>(v.floating)));
      return std::string("f") + buf;
    }
    case Kind::string:
      return "s" + hex(v.text);
    case Kind::bytes:
      return "b" + hex(v.text);
    case Kind::bytearray:
      return "y" + hex(v.text);
    case Kind::tuple:
      return "(" + describe_items(p, v.items, false) + ")";
    case Kind::list:
      return "[" + describe_items(p, v.items, false) + "]";
    case Kind::dict:
      return "{" + describe_items(p, v.items, true) + "}";
    case Kind::set:
      return "<" + describe_items(p, v.items, false) + ">";
    case Kind::frozenset:
      return "Z<" + describe_items(p, v.items, false) + ">";
    case Kind::global:
      return "global(" + v.module + "." + v.name + ")";
    case Kind::persistent_id:
      return "pid(" + describe(p, v.args) + ")";
    case Kind::call:
      break;
  }
  const Value& callee = p.at(v.callee);
  const std::string name = callee.module + "." + callee.name;
  const std::vector<ValueId>& args = p.at(v.args).items;
  if (name == "_codecs.encode" && args.size() == 2) return "b" + hex(latin1(p.at(args[0]).text));
  if (name == "builtins.bytearray")
    return args.empty() ? "y" : "y" + describe(p, args[0]).substr(1);
  if (name == "builtins.set" || name == "builtins.frozenset") {
    const std::string list = args.empty() ? "[]" : describe(p, args[0]);
    return (name == "builtins.set" ? "<" : "Z<") + list.substr(1, list.size() - 2) + ">";
  }
  if (name == "collections.OrderedDict") return "O{" + describe_items(p, v.items, true) + "}";
  return "call(" + name + "," + describe(p, v.args) + ")";
}

std::string describe_root(const Bytes& b) {
  const Pickle p = strict(b);
  return describe(p, p.root);
}

// ---- CPython's pickles ----------------------------------------------------------------

class CPythonPickles : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { generated_ = test::run_fixture_script("make_data_pickles.py"); }
  void SetUp() override {
    if (generated_.status == -1) GTEST_SKIP() << "no " << test::python_interpreter();
    ASSERT_EQ(generated_.status, 0) << "make_data_pickles.py failed";
  }
  static Pickle load(const std::string& stem) {
    const auto bytes = test::read_bytes(generated_.dir / (stem + ".pkl"));
    return unpickle(bytes, Options{}, stem);
  }
  static test::Generated generated_;
};

test::Generated CPythonPickles::generated_;

TEST_F(CPythonPickles, EveryCaseAtEveryProtocolMatchesStructurally) {
  const auto manifest = test::read_manifest(generated_.dir);
  ASSERT_GE(manifest.size(), 60u);
  for (const auto& row : manifest) {
    const std::string& stem = row[0];
    SCOPED_TRACE(stem);
    const auto bytes = test::read_bytes(generated_.dir / (stem + ".pkl"));
    const Pickle p = unpickle(bytes, Options{}, stem);
    EXPECT_TRUE(p.complete);
    EXPECT_EQ(p.end_offset, bytes.size());
    EXPECT_TRUE(p.findings.empty());
    const auto expected = test::read_bytes(generated_.dir / (stem + ".txt"));
    EXPECT_EQ(describe(p, p.root),
              std::string(reinterpret_cast<const char*>(expected.data()), expected.size()));
  }
}

TEST_F(CPythonPickles, SharedReferencesStayShared) {
  for (int protocol = 0; protocol <= 5; ++protocol) {
    SCOPED_TRACE(protocol);
    const Pickle p = load("shared.p" + std::to_string(protocol));
    const Value& root = p.at(p.root);
    ASSERT_EQ(root.kind, Kind::list);
    ASSERT_EQ(root.items.size(), 3u);
    EXPECT_EQ(root.items[0], root.items[1]);
    const Value& dict = p.at(root.items[2]);
    ASSERT_EQ(dict.kind, Kind::dict);
    EXPECT_EQ(dict.items[1], root.items[0]);
  }
}

TEST_F(CPythonPickles, CyclesThroughTheMemo) {
  for (int protocol = 0; protocol <= 5; ++protocol) {
    SCOPED_TRACE(protocol);
    const Pickle p = load("cycle.p" + std::to_string(protocol));
    const Value& root = p.at(p.root);
    ASSERT_EQ(root.kind, Kind::list);
    ASSERT_EQ(root.items.size(), 1u);
    EXPECT_EQ(root.items[0], p.root);
  }
}

// ---- opcodes, one by one ----------------------------------------------------------------

TEST(Unpickler, ProtoAcceptsZeroToFive) {
  for (unsigned proto = 0; proto <= 5; ++proto) {
    EXPECT_EQ(describe_root(Bytes().proto(proto).op('N').stop()), "N");
  }
  expect_error(Bytes().proto(6).op('N').stop(), ErrorCode::invalid_pickle, "protocol 6");
}

TEST(Unpickler, TextIntegers) {
  EXPECT_EQ(describe_root(Bytes().op('I').line("42").stop()), "i42");
  EXPECT_EQ(describe_root(Bytes().op('I').line("-7").stop()), "i-7");
  EXPECT_EQ(describe_root(Bytes().op('I').line("00").stop()), "F");
  EXPECT_EQ(describe_root(Bytes().op('I').line("01").stop()), "T");
  EXPECT_EQ(describe_root(Bytes().op('I').line("9223372036854775807").stop()),
            "i9223372036854775807");
  EXPECT_EQ(describe_root(Bytes().op('I').line("9223372036854775808").stop()),
            "I000000000000008000");
  EXPECT_EQ(describe_root(Bytes().op('L').line("-9223372036854775809L").stop()),
            "Iffffffffffffff7fff");
  EXPECT_EQ(describe_root(Bytes().op('L').line("123L").stop()), "i123");
  expect_error(Bytes().op('I').line("012").stop(), ErrorCode::invalid_pickle, "INT");
  expect_error(Bytes().op('I').line("12x").stop(), ErrorCode::invalid_pickle, "INT");
  expect_error(Bytes().op('I').raw("12").stop(), ErrorCode::invalid_pickle, "newline");
  expect_error(Bytes().op('L').line(std::string(5000, '9')).stop(), ErrorCode::invalid_pickle,
               "LONG");
}

TEST(Unpickler, BinaryIntegers) {
  EXPECT_EQ(describe_root(Bytes().op('J').le(0xFFFFFFFF, 4).stop()), "i-1");
  EXPECT_EQ(describe_root(Bytes().op('J').le(0x7FFFFFFF, 4).stop()), "i2147483647");
  EXPECT_EQ(describe_root(Bytes().op('K').op(0xFF).stop()), "i255");
  EXPECT_EQ(describe_root(Bytes().op('M').le(0xFFFF, 2).stop()), "i65535");
  EXPECT_EQ(describe_root(Bytes().proto(2).op(0x8a).op(0).stop()), "i0");
  EXPECT_EQ(describe_root(Bytes().proto(2).op(0x8a).op(1).op(0xFF).stop()), "i-1");
  EXPECT_EQ(describe_root(Bytes().proto(2).op(0x8a).op(2).op(0xFF).op(0).stop()), "i255");
  // Redundant sign bytes are not part of the value.
  EXPECT_EQ(describe_root(Bytes().proto(2).op(0x8a).op(9).le(0, 8).op(0).stop()), "i0");
  EXPECT_EQ(describe_root(Bytes().proto(2).op(0x8a).op(9).le(0, 8).op(1).stop()),
            "I000000000000000001");
  EXPECT_EQ(describe_root(Bytes().proto(2).op(0x8b).le(2, 4).op(0).op(0x80).stop()), "i-32768");
  expect_error(Bytes().proto(2).op(0x8b).le(0xFFFFFFFF, 4).stop(), ErrorCode::invalid_pickle,
               "negative length");
}

TEST(Unpickler, Floats) {
  EXPECT_EQ(describe_root(Bytes().op('F').line("1.5").stop()), "f3ff8000000000000");
  EXPECT_EQ(describe_root(Bytes().op('F').line("-inf").stop()), "ffff0000000000000");
  EXPECT_EQ(describe_root(Bytes().op('F').line("nan").stop()), "fnan");
  EXPECT_EQ(describe_root(Bytes().op('F').line("1e400").stop()), "f7ff0000000000000");
  expect_error(Bytes().op('F').line("1.5x").stop(), ErrorCode::invalid_pickle, "FLOAT");
  expect_error(Bytes().op('F').line("+-1").stop(), ErrorCode::invalid_pickle, "FLOAT");
  EXPECT_EQ(describe_root(Bytes().op('G').op(0x3F).op(0xF8).le(0, 6).stop()), "f3ff8000000000000");
}

TEST(Unpickler, ProtocolZeroStrings) {
  EXPECT_EQ(describe_root(Bytes().op('S').line("'abc'").stop()), "b616263");
  EXPECT_EQ(describe_root(Bytes().op('S').line(R"("a\x41\n\101\q")").stop()), "b61410a415c71");
  expect_error(Bytes().op('S').line("'abc").stop(), ErrorCode::invalid_pickle, "quoted");
  expect_error(Bytes().op('S').line(R"('\x4')").stop(), ErrorCode::invalid_pickle, "STRING");
  expect_error(Bytes().op('S').line(R"('abc\')").stop(), ErrorCode::invalid_pickle, "STRING");
  // raw-unicode-escape: Latin-1 bytes, \u escapes, and an even run of backslashes is literal.
  EXPECT_EQ(describe_root(Bytes().op('V').line("caf\xe9").stop()), "s636166c3a9");
  EXPECT_EQ(describe_root(Bytes().op('V').line(R"(\u00e9\U0001F600)").stop()), "sc3a9f09f9880");
  EXPECT_EQ(describe_root(Bytes().op('V').line(R"(\\u0041)").stop()), "s5c5c7530303431");
  EXPECT_EQ(describe_root(Bytes().op('V').line(R"(\\\u0041)").stop()), "s5c5c41");
  expect_error(Bytes().op('V').line(R"(\u12)").stop(), ErrorCode::invalid_pickle, "UNICODE");
  expect_error(Bytes().op('V').line(R"(\U00110000)").stop(), ErrorCode::invalid_pickle, "UNICODE");
}

TEST(Unpickler, BinaryStringsAndBytes) {
  EXPECT_EQ(describe_root(Bytes().op('T').le(2, 4).raw("ab").stop()), "b6162");
  EXPECT_EQ(describe_root(Bytes().op('U').op(1).raw("z").stop()), "b7a");
  EXPECT_EQ(describe_root(Bytes().proto(3).op('B').le(1, 4).raw("q").stop()), "b71");
  EXPECT_EQ(describe_root(Bytes().proto(3).op('C').op(0).stop()), "b");
  EXPECT_EQ(describe_root(Bytes().proto(4).op(0x8e).le(2, 8).raw("hi").stop()), "b6869");
  EXPECT_EQ(describe_root(Bytes().proto(5).op(0x96).le(1, 8).raw("!").stop()), "y21");
  expect_error(Bytes().op('T').le(0x80000000, 4).stop(), ErrorCode::invalid_pickle,
               "negative length");
}

TEST(Unpickler, UnicodeIsValidatedUtf8) {
  EXPECT_EQ(describe_root(Bytes().binunicode("\xc3\xa9").stop()), "sc3a9");
  EXPECT_EQ(describe_root(Bytes().proto(4).short_unicode("ok").stop()), "s6f6b");
  EXPECT_EQ(describe_root(Bytes().proto(4).op(0x8d).le(1, 8).raw("x").stop()), "s78");
  // CPython decodes with 'surrogatepass', so an encoded lone surrogate is a valid str.
  EXPECT_EQ(describe_root(Bytes().binunicode("\xed\xa0\x80").stop()), "seda080");
  expect_error(Bytes().binunicode("\xff").stop(), ErrorCode::invalid_pickle, "UTF-8");
  expect_error(Bytes().binunicode("\xc0\x80").stop(), ErrorCode::invalid_pickle, "UTF-8");
  expect_error(Bytes().binunicode("\xe2\x82").stop(), ErrorCode::invalid_pickle, "UTF-8");
  expect_error(Bytes().binunicode("\xf4\x90\x80\x80").stop(), ErrorCode::invalid_pickle, "UTF-8");
}

TEST(Unpickler, Constants) {
  EXPECT_EQ(describe_root(Bytes().op('N').stop()), "N");
  EXPECT_EQ(describe_root(Bytes().proto(2).op(0x88).stop()), "T");
  EXPECT_EQ(describe_root(Bytes().proto(2).op(0x89).stop()), "F");
}

TEST(Unpickler, Tuples) {
  EXPECT_EQ(describe_root(Bytes().op(')').stop()), "()");
  EXPECT_EQ(describe_root(Bytes().op('(').op('K').op(1).op('K').op(2).op('t').stop()), "(i1,i2)");
  EXPECT_EQ(describe_root(Bytes().op('N').op(0x85).stop()), "(N)");
  EXPECT_EQ(describe_root(Bytes().op('N').op('K').op(1).op(0x86).stop()), "(N,i1)");
  EXPECT_EQ(describe_root(Bytes().op('N').op('N').op('N').op(0x87).stop()), "(N,N,N)");
  // TUPLE2 may not take values from below a MARK.
  expect_error(Bytes().op('N').op('(').op('N').op(0x86).stop(), ErrorCode::invalid_pickle,
               "empty stack");
}

TEST(Unpickler, ListsAndAppends) {
  EXPECT_EQ(describe_root(Bytes().op(']').op('K').op(1).op('a').stop()), "[i1]");
  EXPECT_EQ(describe_root(Bytes().op(']').op('(').op('K').op(1).op('K').op(2).op('e').stop()),
            "[i1,i2]");
  EXPECT_EQ(describe_root(Bytes().op('(').op('N').op('l').stop()), "[N]");
  expect_error(Bytes().op(')').op('N').op('a').stop(), ErrorCode::invalid_pickle, "not a list");
  expect_error(Bytes().op(']').op('N').op('e').stop(), ErrorCode::invalid_pickle, "MARK");
}

TEST(Unpickler, DictsKeepPythonKeySemantics) {
  EXPECT_EQ(describe_root(Bytes().op('}').op('K').op(1).op('N').op('s').stop()), "{i1:N}");
  EXPECT_EQ(describe_root(Bytes().op('(').op('K').op(1).op('K').op(2).op('d').stop()), "{i1:i2}");
  // A repeated key keeps its first place and takes the last value; True == 1 == 1.0.
  Bytes dup;
  dup.op('}').op('(').short_unicode("a").op('K').op(1).short_unicode("b").op('K').op(2);
  dup.short_unicode("a").op('K').op(3).op('u').stop();
  EXPECT_EQ(describe_root(dup), "{s61:i3,s62:i2}");
  Bytes equal;
  equal.proto(2).op('}').op('(').op('K').op(1).op('N').op(0x88).op('K').op(5);
  equal.op('G').op(0x3F).op(0xF0).le(0, 6).op('K').op(6).op('u').stop();
  EXPECT_EQ(describe_root(equal), "{i1:i6}");
  // Unicode and bytes keys differ.
  Bytes kinds;
  kinds.proto(3).op('}').op('(').short_unicode("k").op('N').op('C').op(1).raw("k").op('N');
  kinds.op('u').stop();
  EXPECT_EQ(describe_root(kinds), "{s6b:N,b6b:N}");
  expect_error(Bytes().op('(').op('N').op('d').stop(), ErrorCode::invalid_pickle, "odd");
  expect_error(Bytes().op('}').op('(').op('N').op('u').stop(), ErrorCode::invalid_pickle, "odd");
  expect_error(Bytes().op(']').op('N').op('N').op('s').stop(), ErrorCode::invalid_pickle,
               "not a dict");
  expect_error(Bytes().op('}').op(']').op('N').op('s').stop(), ErrorCode::invalid_pickle,
               "unhashable");
}

TEST(Unpickler, SetsAndFrozensets) {
  Bytes set;
  set.proto(4).op(0x8f).op('(').op('K').op(1).op('K').op(2).op('K').op(1).op(0x90).stop();
  EXPECT_EQ(describe_root(set), "<i1,i2>");
  Bytes frozen;
  frozen.proto(4).op('(').short_unicode("a").short_unicode("a").op(0x91).stop();
  EXPECT_EQ(describe_root(frozen), "Z<s61>");
  expect_error(Bytes().proto(4).op(']').op('(').op('N').op(0x90).stop(), ErrorCode::invalid_pickle,
               "not a set");
}

TEST(Unpickler, PopAndPopMark) {
  EXPECT_EQ(describe_root(Bytes().op('K').op(1).op('K').op(2).op('0').stop()), "i1");
  EXPECT_EQ(describe_root(Bytes().op('K').op(1).op('(').op('N').op('N').op('1').stop()), "i1");
  // POP removes a MARK that is the newest thing on the stack, as CPython does.
  EXPECT_EQ(describe_root(Bytes().op('K').op(1).op('(').op('0').stop()), "i1");
  expect_error(Bytes().op('0').stop(), ErrorCode::invalid_pickle, "empty stack");
  expect_error(Bytes().op('N').op('1').stop(), ErrorCode::invalid_pickle, "MARK");
  expect_error(Bytes().op('(').stop(), ErrorCode::invalid_pickle, "empty stack");
  expect_error(Bytes().stop(), ErrorCode::invalid_pickle, "empty stack");
  expect_error(Bytes().op('N'), ErrorCode::invalid_pickle, "without STOP");
  expect_error(Bytes(), ErrorCode::invalid_pickle, "without STOP");
}

TEST(Unpickler, MemoPutAndGet) {
  EXPECT_EQ(
      describe_root(Bytes().op('K').op(7).op('p').line("3").op('g').line("03").op(0x86).stop()),
      "(i7,i7)");
  EXPECT_EQ(describe_root(Bytes().op('K').op(7).op('q').op(9).op('h').op(9).op(0x86).stop()),
            "(i7,i7)");
  // A huge index costs nothing: the memo is a map, not an array.
  Bytes huge;
  huge.op('K').op(7).op('r').le(0xFFFFFFFF, 4).op('j').le(0xFFFFFFFF, 4).op(0x86).stop();
  EXPECT_EQ(describe_root(huge), "(i7,i7)");
  const Error missing = strict_error(Bytes().op('h').op(4).stop());
  EXPECT_EQ(missing.code(), ErrorCode::invalid_pickle);
  EXPECT_NE(std::string(missing.what()).find("memo key 4"), std::string::npos) << missing.what();
  expect_error(Bytes().op('j').le(1, 4).stop(), ErrorCode::invalid_pickle, "memo key 1");
  expect_error(Bytes().op('g').line("-1").stop(), ErrorCode::invalid_pickle, "negative");
  expect_error(Bytes().op('q').op(0).stop(), ErrorCode::invalid_pickle, "needs a value");
}

TEST(Unpickler, MemoizeStoresAtTheMemoSize) {
  // PUT 5 fills one slot, so MEMOIZE stores the second value under key 1, not 6 (the
  // outer TUPLE2 takes the 20 left on the stack and the inner pair).
  Bytes b;
  b.proto(4).op('K').op(10).op('q').op(5).op('K').op(20).op(0x94);
  b.op('h').op(1).op('h').op(5).op(0x86).op(0x86).stop();
  EXPECT_EQ(describe_root(b), "(i20,(i20,i10))");
  expect_error(Bytes().proto(4).op('K').op(1).op(0x94).op('h').op(2).stop(),
               ErrorCode::invalid_pickle, "memo key 2");
}

TEST(Unpickler, MemoLimit) {
  Options options;
  options.max_memo_entries = 2;
  Bytes b;
  b.op('N').op('q').op(0).op('q').op(1).op('q').op(0).op('q').op(2).stop();
  try {
    (void)unpickle(b.span(), options, "x");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_pickle);
    EXPECT_NE(std::string(e.what()).find("memo"), std::string::npos);
  }
}

TEST(Unpickler, Frames) {
  Bytes good;
  good.proto(4).op(0x95).le(3, 8).op('K').op(1).op(0x85).op(0x95).le(1, 8).stop();
  EXPECT_EQ(describe_root(good), "(i1)");
  // Outside any frame again after a frame's last byte.
  Bytes after;
  after.proto(4).op(0x95).le(2, 8).op('K').op(1).stop();
  EXPECT_EQ(describe_root(after), "i1");
  Bytes straddle;  // BININT's 4 bytes run past the 3-byte frame
  straddle.proto(4).op(0x95).le(3, 8).op('J').le(1, 4).stop();
  expect_error(straddle, ErrorCode::invalid_pickle, "end of the frame");
  Bytes line;  // a text argument's newline lies outside the frame
  line.proto(4).op(0x95).le(3, 8).op('I').line("12").stop();
  expect_error(line, ErrorCode::invalid_pickle, "end of the frame");
  Bytes too_long;
  too_long.proto(4).op(0x95).le(100, 8).op('N').stop();
  expect_error(too_long, ErrorCode::invalid_pickle, "FRAME of 100 bytes");
  Bytes nested;
  nested.proto(4).op(0x95).le(12, 8).op(0x95).le(1, 8).op('N').stop().op('N').op('N');
  expect_error(nested, ErrorCode::invalid_pickle, "before the end of the frame");
}

TEST(Unpickler, LengthPrefixBeyondInput) {
  expect_error(Bytes().op('X').le(0xFFFFFFFF, 4).raw("ab").stop(), ErrorCode::invalid_pickle,
               "only 3 are left");
  expect_error(Bytes().proto(4).op(0x8e).le(std::uint64_t{1} << 63, 8).stop(),
               ErrorCode::invalid_pickle, "bytes but only");
  expect_error(Bytes().proto(5).op(0x96).le(~std::uint64_t{0}, 8).stop(), ErrorCode::invalid_pickle,
               "bytes but only");
  expect_error(Bytes().op('U').op(5).raw("ab"), ErrorCode::invalid_pickle, "only 2 are left");
  expect_error(Bytes().op('J').le(1, 2), ErrorCode::invalid_pickle, "needs 4 bytes");
}

TEST(Unpickler, TrailingBytesAreLeftToTheCaller) {
  Bytes b;
  b.op('N').stop().op('K').op(1).stop();
  const Pickle first = strict(b);
  EXPECT_TRUE(first.complete);
  EXPECT_EQ(first.end_offset, 2u);
  const Pickle second = unpickle(b.span().subspan(first.end_offset), Options{}, "x");
  EXPECT_EQ(describe(second, second.root), "i1");
}

// ---- globals, calls and BUILD -----------------------------------------------------------

TEST(Unpickler, AllowedGlobalsAndCalls) {
  Bytes b;
  b.proto(2).global("collections", "OrderedDict").op(')').op('R');
  b.op('(').short_unicode("w").op('K').op(1).op('u');
  b.op('}').short_unicode("_metadata").op('N').op('s').op('b').stop();
  const Pickle p = strict(b);
  const Value& od = p.at(p.root);
  ASSERT_EQ(od.kind, Kind::call);
  EXPECT_EQ(p.at(od.callee).kind, Kind::global);
  EXPECT_EQ(p.at(od.callee).module, "collections");
  EXPECT_EQ(p.at(od.callee).name, "OrderedDict");
  EXPECT_EQ(p.at(od.args).kind, Kind::tuple);
  EXPECT_EQ(describe(p, p.root), "O{s77:i1}");
  EXPECT_EQ(describe(p, od.state), "{s5f6d65746164617461:N}");
  ASSERT_EQ(p.globals.size(), 1u);
  EXPECT_TRUE(p.globals[0].allowed);
  EXPECT_EQ(p.globals[0].offset, 2u);
}

TEST(Unpickler, NewobjBuildsACallToo) {
  Bytes b;
  b.proto(2).global("torch", "Size").op(']').op('K').op(2).op('a').op(0x85).op(0x81).stop();
  EXPECT_EQ(describe_root(b), "call(torch.Size,([i2]))");
}

TEST(Unpickler, ForbiddenGlobalNamesOriginAndOffset) {
  Bytes b;
  b.proto(2).global("os", "system").binunicode("id").op(0x85).op('R').stop();
  const Error e = strict_error(b, "model.bin: archive/data.pkl");
  EXPECT_EQ(e.code(), ErrorCode::forbidden_pickle);
  EXPECT_STREQ(e.what(),
               "model.bin: archive/data.pkl: offset 2: global `os.system` is not allowed (only "
               "tensor data is)");
}

TEST(Unpickler, KnownUnsupportedGlobalsSaySo) {
  Bytes b;
  b.proto(2).global("torch._utils", "_rebuild_qtensor").stop();
  const Error e = strict_error(b);
  EXPECT_EQ(e.code(), ErrorCode::forbidden_pickle);
  EXPECT_NE(std::string(e.what()).find("not supported"), std::string::npos) << e.what();
}

TEST(Unpickler, CustomAllowlist) {
  Options options;
  options.allowed = [](std::string_view module, std::string_view name) {
    return module == "os" && name == "getcwd";
  };
  Bytes ok;
  ok.global("os", "getcwd").stop();
  EXPECT_EQ(unpickle(ok.span(), options, "x").globals.size(), 1u);
  Bytes refused;
  refused.global("collections", "OrderedDict").stop();
  EXPECT_THROW((void)unpickle(refused.span(), options, "x"), Error);
}

TEST(Unpickler, PythonTwoBuiltinsOnlyBelowProtocolThree) {
  Bytes p2;
  p2.proto(2).global("__builtin__", "set").stop();
  EXPECT_EQ(describe_root(p2), "global(builtins.set)");
  Bytes p3;
  p3.proto(3).global("__builtin__", "set").stop();
  expect_error(p3, ErrorCode::forbidden_pickle, "`__builtin__.set`");
  expect_error(Bytes().global("__builtin__", "eval").stop(), ErrorCode::forbidden_pickle,
               "`__builtin__.eval`");
}

TEST(Unpickler, DottedOrOddGlobalNames) {
  expect_error(Bytes().global("os", "path.join").stop(), ErrorCode::forbidden_pickle,
               "`os.path.join`");
  expect_error(Bytes().global("collections", "OrderedDict.fromkeys").stop(),
               ErrorCode::forbidden_pickle, "dotted");
  expect_error(Bytes().global(".os", "system").stop(), ErrorCode::forbidden_pickle, "dotted");
  expect_error(Bytes().global("os ", "system").stop(), ErrorCode::forbidden_pickle, "dotted");
  expect_error(Bytes().global("", "x").stop(), ErrorCode::forbidden_pickle, "dotted");
}

TEST(Unpickler, StackGlobalOperands) {
  Bytes literal;
  literal.proto(4).short_unicode("torch").short_unicode("Size").op(0x93).stop();
  EXPECT_EQ(describe_root(literal), "global(torch.Size)");
  // Through the memo: accepted (pickle itself writes this), noted in scan mode.
  Bytes memo;
  memo.proto(4).short_unicode("torch").op(0x94).op('0').op('h').op(0).short_unicode("Size");
  memo.op(0x93).stop();
  EXPECT_EQ(describe_root(memo), "global(torch.Size)");
  const Pickle scanned = scan(memo);
  ASSERT_EQ(scanned.findings.size(), 1u);
  EXPECT_FALSE(scanned.findings[0].dangerous);
  EXPECT_NE(scanned.findings[0].message.find("memo"), std::string::npos);
  Bytes bytes;
  bytes.proto(4).op('C').op(5).raw("torch").op('C').op(4).raw("Size").op(0x93).stop();
  expect_error(bytes, ErrorCode::forbidden_pickle, "bytes and bytes");
  Bytes ints;
  ints.proto(4).op('K').op(1).op('K').op(2).op(0x93).stop();
  expect_error(ints, ErrorCode::forbidden_pickle, "int and int");
  Bytes dotted;
  dotted.proto(4).short_unicode("pathlib").short_unicode("os.system").op(0x93).stop();
  expect_error(dotted, ErrorCode::forbidden_pickle, "`pathlib.os.system`");
  Bytes computed;  // the module name would be the result of a call
  computed.proto(4).global("torch", "Size").op(')').op('R').short_unicode("x").op(0x93).stop();
  expect_error(computed, ErrorCode::forbidden_pickle, "call result and str");
  expect_error(Bytes().proto(4).short_unicode("x").op(0x93).stop(), ErrorCode::invalid_pickle,
               "empty stack");
}

TEST(Unpickler, ReduceNeedsAnAllowedGlobalAndATuple) {
  Bytes on_list;
  on_list.op(']').op(')').op('R').stop();
  expect_error(on_list, ErrorCode::forbidden_pickle, "calls a list");
  Bytes on_call;
  on_call.proto(2).global("torch", "Size").op(')').op('R').op(')').op('R').stop();
  expect_error(on_call, ErrorCode::forbidden_pickle, "calls a call result");
  Bytes args;
  args.proto(2).global("torch", "Size").op(']').op('R').stop();
  expect_error(args, ErrorCode::invalid_pickle, "not a tuple");
}

TEST(Unpickler, BuildOnlyOnCallsAndDicts) {
  Bytes on_dict;
  on_dict.op('}').op('}').op('b').stop();
  const Pickle p = strict(on_dict);
  EXPECT_EQ(p.at(p.at(p.root).state).kind, Kind::dict);
  Bytes on_global;
  on_global.global("collections", "OrderedDict").op('}').op('b').stop();
  expect_error(on_global, ErrorCode::forbidden_pickle, "BUILD on global `collections.OrderedDict`");
  expect_error(Bytes().op(']').op('N').op('b').stop(), ErrorCode::invalid_pickle,
               "BUILD on a list");
  expect_error(Bytes().op('}').op('}').op('b').op('}').op('b').stop(), ErrorCode::invalid_pickle,
               "twice");
}

TEST(Unpickler, PersistentIds) {
  Bytes b;
  b.proto(2).op('(').short_unicode("storage").global("torch", "FloatStorage");
  b.short_unicode("0").short_unicode("cpu").op('K').op(6).op('t').op('Q').stop();
  const Pickle p = strict(b);
  ASSERT_EQ(p.at(p.root).kind, Kind::persistent_id);
  EXPECT_EQ(describe(p, p.root),
            "pid((s73746f72616765,global(torch.FloatStorage),s30,s637075,i6))");
}

TEST(Unpickler, RefusedOpcodes) {
  const std::vector<std::pair<std::string, Bytes>> cases = [] {
    std::vector<std::pair<std::string, Bytes>> c;
    c.emplace_back("INST", Bytes().op('(').op('i').line("os").line("system").stop());
    c.emplace_back("OBJ", Bytes().op('(').global("torch", "Size").op('o').stop());
    c.emplace_back("EXT1", Bytes().proto(2).op(0x82).op(1).stop());
    c.emplace_back("EXT2", Bytes().proto(2).op(0x83).le(1, 2).stop());
    c.emplace_back("EXT4", Bytes().proto(2).op(0x84).le(1, 4).stop());
    c.emplace_back("NEWOBJ_EX", Bytes().proto(4).op('N').op(')').op('}').op(0x92).stop());
    c.emplace_back("PERSID", Bytes().op('P').line("0").stop());
    c.emplace_back("NEXT_BUFFER", Bytes().proto(5).op(0x97).stop());
    c.emplace_back("READONLY_BUFFER", Bytes().proto(5).op('N').op(0x98).stop());
    c.emplace_back("DUP", Bytes().op('N').op('2').op(0x86).stop());
    return c;
  }();
  for (const auto& [name, bytes] : cases) {
    SCOPED_TRACE(name);
    expect_error(bytes, ErrorCode::forbidden_pickle, "opcode " + name);
    // Scan mode reports it as dangerous and carries on to STOP.
    const Pickle p = scan(bytes);
    EXPECT_TRUE(p.complete);
    ASSERT_FALSE(p.findings.empty());
    EXPECT_TRUE(p.findings[0].dangerous);
    EXPECT_NE(p.findings[0].message.find(name), std::string::npos);
  }
}

TEST(Unpickler, UnknownOpcode) {
  Bytes b;
  b.op('N').op(0xFF).stop();
  const Error e = strict_error(b);
  EXPECT_EQ(e.code(), ErrorCode::forbidden_pickle);
  EXPECT_NE(std::string(e.what()).find("offset 1: unknown opcode 0xff"), std::string::npos);
  const Pickle p = scan(b);
  EXPECT_FALSE(p.complete);
  ASSERT_EQ(p.findings.size(), 1u);
  EXPECT_FALSE(p.findings[0].dangerous);
}

// ---- scan mode --------------------------------------------------------------------------

TEST(Unpickler, ScanRecordsEveryGlobalAndKeepsGoing) {
  Bytes b;
  b.proto(2).global("os", "system").binunicode("id").op(0x85).op('R');
  b.op('(').op('K').op(1).op('e');  // APPENDS on the opaque result: absorbed
  b.op('}').op('b');                // and BUILD
  b.global("builtins", "exec").op('N').op(0x85).op('R');
  b.global("collections", "OrderedDict").op(')').op('R').op(0x87).stop();
  const Pickle p = scan(b);
  EXPECT_TRUE(p.complete);
  ASSERT_EQ(p.globals.size(), 3u);
  EXPECT_EQ(p.globals[0].module + "." + p.globals[0].name, "os.system");
  EXPECT_FALSE(p.globals[0].allowed);
  EXPECT_EQ(p.globals[1].module + "." + p.globals[1].name, "builtins.exec");
  EXPECT_FALSE(p.globals[1].allowed);
  EXPECT_TRUE(p.globals[2].allowed);
  ASSERT_EQ(p.findings.size(), 2u);
  EXPECT_TRUE(p.findings[0].dangerous);
  EXPECT_EQ(p.findings[0].offset, 2u);
  EXPECT_NE(p.findings[1].message.find("builtins.exec"), std::string::npos);
}

TEST(Unpickler, ScanStopsAtTheFirstStructuralError) {
  Bytes b;
  b.proto(2).global("os", "system").op('h').op(9).global("builtins", "eval").stop();
  const Pickle p = scan(b);
  EXPECT_FALSE(p.complete);
  ASSERT_EQ(p.globals.size(), 1u);
  ASSERT_EQ(p.findings.size(), 2u);
  EXPECT_TRUE(p.findings[0].dangerous);
  EXPECT_FALSE(p.findings[1].dangerous);
  EXPECT_EQ(p.findings[1].offset, 13u);
  EXPECT_NE(p.findings[1].message.find("memo key 9"), std::string::npos);
}

TEST(Unpickler, StrictModeHasNoFindings) {
  const Pickle p = strict(Bytes().proto(2).global("torch", "Size").stop());
  EXPECT_TRUE(p.findings.empty());
  EXPECT_EQ(p.globals.size(), 1u);
}

// ---- size and depth ---------------------------------------------------------------------

TEST(Unpickler, MillionNestedListsDoNotRecurse) {
  constexpr int depth = 1'000'000;
  Bytes b;
  b.proto(2);
  for (int i = 0; i < depth; ++i) b.op(']');
  for (int i = 1; i < depth; ++i) b.op('a');
  b.stop();
  const Pickle p = strict(b);
  ValueId id = p.root;
  int levels = 1;
  while (!p.at(id).items.empty()) {
    id = p.at(id).items[0];
    ++levels;
  }
  EXPECT_EQ(levels, depth);
}

TEST(Unpickler, MillionMarksAreAStructuralError) {
  Bytes b;
  for (int i = 0; i < 1'000'000; ++i) b.op('(');
  b.stop();
  expect_error(b, ErrorCode::invalid_pickle, "empty stack");
}

TEST(Unpickler, StackAndValueLimits) {
  Options options;
  options.max_stack_depth = 3;
  Bytes deep;
  deep.op('N').op('N').op('(').op('N').stop();
  EXPECT_THROW((void)unpickle(deep.span(), options, "x"), Error);
  Options values;
  values.max_values = 4;
  Bytes many;
  many.op('K').op(1).op('K').op(2).op('K').op(3).op('K').op(4).op(0x87).stop();
  try {
    (void)unpickle(many.span(), values, "x");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_pickle);
    EXPECT_NE(std::string(e.what()).find("more than 4 values"), std::string::npos);
  }
}

// ---- the allowlist ----------------------------------------------------------------------

TEST(Allowlist, ExactPairsOnly) {
  EXPECT_TRUE(is_allowed_global("collections", "OrderedDict"));
  EXPECT_TRUE(is_allowed_global("torch._utils", "_rebuild_tensor_v2"));
  EXPECT_TRUE(is_allowed_global("torch._utils", "_rebuild_parameter_with_state"));
  EXPECT_TRUE(is_allowed_global("torch", "BFloat16Storage"));
  EXPECT_TRUE(is_allowed_global("torch.storage", "UntypedStorage"));
  EXPECT_TRUE(is_allowed_global("torch", "float8_e4m3fn"));
  EXPECT_TRUE(is_allowed_global("torch", "uint64"));
  EXPECT_TRUE(is_allowed_global("_codecs", "encode"));
  EXPECT_TRUE(is_allowed_global("builtins", "complex"));
  EXPECT_TRUE(is_allowed_global("numpy.core.multiarray", "scalar"));
  EXPECT_TRUE(is_allowed_global("numpy._core.multiarray", "_reconstruct"));
  EXPECT_TRUE(is_allowed_global("numpy", "dtype"));
  EXPECT_FALSE(is_allowed_global("torch", "load"));
  EXPECT_FALSE(is_allowed_global("torch", "QInt8Storage"));
  EXPECT_FALSE(is_allowed_global("torch._utils", "_rebuild_qtensor"));
  EXPECT_FALSE(is_allowed_global("builtins", "eval"));
  EXPECT_FALSE(is_allowed_global("collections", "OrderedDict.fromkeys"));
  EXPECT_FALSE(is_allowed_global("collection", "OrderedDict"));
  EXPECT_FALSE(is_allowed_global("torch._utils.x", "_rebuild_tensor"));
  EXPECT_FALSE(is_allowed_global("numpy", "load"));
  EXPECT_FALSE(is_allowed_global("", ""));
}

// The allowlist pinned pair by pair: a global added to it (or dropped) must be a change to
// this test too. The hostile fixtures of scan_test.cpp and convert_test.cpp check the other
// side, that the dangerous globals stay out.
const std::set<std::pair<std::string_view, std::string_view>> pinned_allowlist = {
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

TEST(Allowlist, IsExactlyThePinnedSet) {
  std::set<std::pair<std::string_view, std::string_view>> listed;
  for (const GlobalName& g : allowed_globals()) {
    EXPECT_TRUE(listed.emplace(g.module, g.name).second) << g.module << "." << g.name << " twice";
  }
  for (const auto& [module, name] : listed) {
    EXPECT_TRUE(pinned_allowlist.contains({module, name}))
        << "newly allowed: " << module << "." << name;
  }
  for (const auto& [module, name] : pinned_allowlist) {
    EXPECT_TRUE(listed.contains({module, name})) << "no longer listed: " << module << "." << name;
  }
}

// The predicate agrees with the list on every pairing of an allowed module with an allowed
// name (e.g. torch.set or builtins.float are not allowed), and refuses other case, prefixes
// and extensions of each.
TEST(Allowlist, PredicateMatchesTheListExactly) {
  std::set<std::string_view> modules, names;
  for (const auto& [module, name] : pinned_allowlist) {
    modules.insert(module);
    names.insert(name);
  }
  const auto agrees = [](std::string_view module, std::string_view name) {
    EXPECT_EQ(is_allowed_global(module, name), pinned_allowlist.contains({module, name}))
        << module << "." << name;
  };
  for (std::string_view module : modules) {
    agrees(std::string(module) + ".x", "OrderedDict");
    agrees(module.substr(0, module.size() - 1), "OrderedDict");
    for (std::string_view name : names) {
      agrees(module, name);
      std::string other_case(name);
      const auto first = static_cast<unsigned char>(other_case[0]);
      other_case[0] =
          static_cast<char>(std::isupper(first) ? std::tolower(first) : std::toupper(first));
      agrees(module, other_case);
      agrees(module, name.substr(0, name.size() - 1));
      agrees(module, std::string(name) + "x");
      agrees(std::string(module) + ".x", name);
    }
  }
}

TEST(Allowlist, KnownUnsupported) {
  EXPECT_TRUE(is_known_unsupported_global("torch._utils", "_rebuild_qtensor"));
  EXPECT_TRUE(is_known_unsupported_global("torch._utils", "_rebuild_sparse_csr_tensor"));
  EXPECT_TRUE(is_known_unsupported_global("torch._tensor", "_rebuild_from_type_v2"));
  EXPECT_TRUE(is_known_unsupported_global("torch", "QUInt4x2Storage"));
  EXPECT_TRUE(is_known_unsupported_global("torch.serialization", "_get_layout"));
  EXPECT_TRUE(is_known_unsupported_global("__torch__.model", "Net"));
  EXPECT_TRUE(is_known_unsupported_global("torch.jit._script", "RecursiveScriptModule"));
  EXPECT_FALSE(is_known_unsupported_global("__torch__x", "Net"));
  EXPECT_FALSE(is_known_unsupported_global("os", "system"));
}

}  // namespace
}  // namespace safetensors::detail::pickle
