// The .npy header is a Python dict literal. It is read by a parser that knows exactly the
// three keys numpy writes and the literal forms their values take; nothing is evaluated.
#include "npy/npy.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

#include "encoding/little_endian.hpp"
#include "error/messages.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail::npy {
namespace {

constexpr std::array<unsigned char, 6> magic = {0x93, 'N', 'U', 'M', 'P', 'Y'};

struct Kind {
  std::string_view code;  // after the byte-order character
  Dtype dtype;
  std::uint64_t itemsize;
  std::uint64_t swap_unit;  // bytes reversed together: a complex number swaps each half
};

constexpr std::array<Kind, 13> kinds = {{
    {"b1", Dtype::BOOL, 1, 1},
    {"u1", Dtype::U8, 1, 1},
    {"i1", Dtype::I8, 1, 1},
    {"i2", Dtype::I16, 2, 2},
    {"u2", Dtype::U16, 2, 2},
    {"i4", Dtype::I32, 4, 4},
    {"u4", Dtype::U32, 4, 4},
    {"i8", Dtype::I64, 8, 8},
    {"u8", Dtype::U64, 8, 8},
    {"f2", Dtype::F16, 2, 2},
    {"f4", Dtype::F32, 4, 4},
    {"f8", Dtype::F64, 8, 8},
    {"c8", Dtype::C64, 8, 4},
}};

const Kind& kind_of(Dtype dtype) {
  for (const Kind& k : kinds) {
    if (k.dtype == dtype) return k;
  }
  throw Error(ErrorCode::invalid_argument,
              "npy: no .npy kind for dtype " + std::string(dtype_name(dtype)));
}

class HeaderParser {
 public:
  HeaderParser(std::string_view text, std::string_view origin) : text_(text), origin_(origin) {}

  void parse(ArrayHeader& out) {
    bool has_descr = false, has_order = false, has_shape = false;
    skip_space();
    expect('{', "`{` (the header is a dict literal)");
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = string_literal("a key");
      skip_space();
      expect(':', "`:` after the key " + detail::quote(key));
      skip_space();
      if (key == "descr") {
        once(has_descr, key);
        if (peek() == '[') {
          unsupported("a structured dtype (the descr is a list) is not supported");
        }
        out.descr = string_literal("the descr");
      } else if (key == "fortran_order") {
        once(has_order, key);
        out.fortran_order = boolean();
      } else if (key == "shape") {
        once(has_shape, key);
        out.shape = tuple();
      } else {
        malformed("unexpected key " + detail::quote(key) +
                  " (only 'descr', 'fortran_order' and 'shape' are allowed)");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != '}') malformed("expected `,` or `}` after the value of " + detail::quote(key));
    }
    ++pos_;
    for (; pos_ < text_.size(); ++pos_) {
      if (text_[pos_] != ' ' && text_[pos_] != '\n') {
        malformed("unexpected " + detail::quote(text_.substr(pos_, 1)) +
                  " after the dict at byte " + std::to_string(pos_));
      }
    }
    if (!has_descr) malformed("the header has no 'descr'");
    if (!has_order) malformed("the header has no 'fortran_order'");
    if (!has_shape) malformed("the header has no 'shape'");
  }

  [[noreturn]] void malformed(const std::string& what) const {
    detail::fail(ErrorCode::invalid_checkpoint, origin_, ".npy header: " + what);
  }
  [[noreturn]] void unsupported(const std::string& what) const {
    detail::fail(ErrorCode::unsupported_checkpoint, origin_, ".npy header: " + what);
  }

 private:
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\t' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  void expect(char c, const std::string& what) {
    if (peek() != c || pos_ >= text_.size())
      malformed("expected " + what + " at byte " + std::to_string(pos_));
    ++pos_;
  }

  void once(bool& seen, const std::string& key) {
    if (seen) malformed("the key " + detail::quote(key) + " appears twice");
    seen = true;
  }

  std::string string_literal(const char* what) {
    const char quote = peek();
    if (quote != '\'' && quote != '"') {
      malformed(std::string("expected a string for ") + what + " at byte " + std::to_string(pos_));
    }
    const std::size_t begin = ++pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      // numpy never escapes anything in these strings; an escape can only be a disguise.
      if (text_[pos_] == '\\') {
        malformed(std::string("escape sequence in ") + what + " at byte " + std::to_string(pos_));
      }
      ++pos_;
    }
    if (pos_ >= text_.size()) {
      malformed(std::string("unterminated string for ") + what + " starting at byte " +
                std::to_string(begin - 1));
    }
    return std::string(text_.substr(begin, pos_++ - begin));
  }

  bool boolean() {
    for (const auto& [word, value] :
         {std::pair{std::string_view("True"), true}, std::pair{std::string_view("False"), false}}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return value;
      }
    }
    malformed("'fortran_order' must be True or False (at byte " + std::to_string(pos_) + ")");
  }

  std::uint64_t integer() {
    if (peek() == '-') malformed("negative dimension in 'shape' at byte " + std::to_string(pos_));
    if (peek() < '0' || peek() > '9') {
      malformed("expected a dimension in 'shape' at byte " + std::to_string(pos_));
    }
    std::uint64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      if (__builtin_mul_overflow(v, 10, &v) ||
          __builtin_add_overflow(v, static_cast<std::uint64_t>(peek() - '0'), &v)) {
        malformed("a dimension in 'shape' overflows 64 bits at byte " + std::to_string(pos_));
      }
      ++pos_;
    }
    if (peek() == 'L') ++pos_;  // Python 2's long literal, in files numpy wrote under it
    return v;
  }

  // `()`, `(3,)`, `(2, 3)` or `(2, 3,)`; `(3)` is an int in Python, not a tuple.
  std::vector<std::uint64_t> tuple() {
    expect('(', "a tuple for 'shape'");
    std::vector<std::uint64_t> dims;
    skip_space();
    bool comma = false;
    while (peek() != ')') {
      dims.push_back(integer());
      skip_space();
      comma = peek() == ',';
      if (comma) {
        ++pos_;
        skip_space();
      } else if (peek() != ')') {
        malformed("expected `,` or `)` in 'shape' at byte " + std::to_string(pos_));
      }
    }
    if (dims.size() == 1 && !comma) malformed("'shape' is `(n)`, an int, not a tuple");
    ++pos_;
    return dims;
  }

  std::string_view text_;
  std::string_view origin_;
  std::size_t pos_ = 0;
};

// Sets dtype and big_endian from descr, refusing what safetensors cannot hold.
void interpret_descr(ArrayHeader& h, const HeaderParser& parser) {
  const std::string& d = h.descr;
  const std::string shown = detail::quote(d);
  if (d.find('O') != std::string::npos) {
    parser.unsupported("object array (descr " + shown +
                       "): its data is a pickle, which is never loaded");
  }
  const char order = d.empty() ? '\0' : d.front();
  const std::string_view code = d.empty() ? std::string_view() : std::string_view(d).substr(1);
  if (order == '<' || order == '>' || order == '=' || order == '|') {
    if (code == "c16")
      parser.unsupported("complex128 (descr " + shown + ") has no safetensors dtype");
    for (const Kind& k : kinds) {
      if (k.code != code) continue;
      if (order == '|' && k.itemsize != 1) break;  // byte order matters for this size
      h.dtype = k.dtype;
      h.big_endian = order == '>' && k.itemsize > 1;
      return;
    }
  }
  parser.unsupported("unsupported dtype (descr " + shown + ")");
}

// Element by element with the item size known at compile time, the common cases.
template <std::size_t Size>
void copy_elements(const std::byte* src, std::byte* dst, std::uint64_t count,
                   std::uint64_t src_stride, std::uint64_t swap_unit) {
  for (std::uint64_t i = 0; i < count; ++i, src += src_stride, dst += Size) {
    std::memcpy(dst, src, Size);
    if (swap_unit > 1) {
      for (std::size_t u = 0; u < Size; u += swap_unit) std::reverse(dst + u, dst + u + swap_unit);
    }
  }
}

void copy_run(const std::byte* src, std::byte* dst, std::uint64_t count, std::uint64_t src_stride,
              std::uint64_t itemsize, std::uint64_t swap_unit) {
  switch (itemsize) {
    case 1:
      return copy_elements<1>(src, dst, count, src_stride, swap_unit);
    case 2:
      return copy_elements<2>(src, dst, count, src_stride, swap_unit);
    case 4:
      return copy_elements<4>(src, dst, count, src_stride, swap_unit);
    default:
      return copy_elements<8>(src, dst, count, src_stride, swap_unit);
  }
}

}  // namespace

std::optional<HeaderExtent> header_extent(std::span<const std::byte> prefix) noexcept {
  const bool version_1 = prefix.size() > 6 && std::to_integer<unsigned>(prefix[6]) == 1;
  const std::uint64_t start = version_1 ? 10 : 12;
  if (prefix.size() < start) return std::nullopt;
  return HeaderExtent{start, load_le_bytes(prefix.subspan(8, start - 8))};
}

bool looks_like_npy(std::span<const std::byte> prefix) noexcept {
  return prefix.size() >= magic.size() &&
         std::memcmp(prefix.data(), magic.data(), magic.size()) == 0;
}

ArrayHeader parse_array_header(std::span<const std::byte> prefix, std::uint64_t total_size,
                               std::string_view origin) {
  HeaderParser parser({}, origin);
  const auto available = std::min<std::uint64_t>(prefix.size(), total_size);
  if (available < 10) {
    parser.malformed(std::to_string(available) + " bytes is too short for a .npy header");
  }
  if (!looks_like_npy(prefix)) parser.malformed("no .npy magic (\\x93NUMPY) at the start");
  const auto major = std::to_integer<unsigned>(prefix[6]);
  const auto minor = std::to_integer<unsigned>(prefix[7]);
  if (minor != 0 || major < 1 || major > 3) {
    parser.malformed("unsupported format version " + std::to_string(major) + "." +
                     std::to_string(minor) + " (1.0, 2.0 and 3.0 are supported)");
  }
  const std::uint64_t start = major == 1 ? 10 : 12;
  if (available < start) {
    parser.malformed(std::to_string(available) + " bytes is too short for a version " +
                     std::to_string(major) + ".0 header");
  }
  const std::uint64_t length = header_extent(prefix)->text_length;
  ArrayHeader h;
  h.data_offset = start + length;
  if (h.data_offset > total_size) {
    parser.malformed("the header length " + std::to_string(length) + " runs past the end (" +
                     std::to_string(total_size) + " bytes)");
  }
  if (h.data_offset > prefix.size()) {
    parser.malformed("only " + std::to_string(prefix.size()) + " bytes of the " +
                     std::to_string(h.data_offset) + "-byte header were read");
  }
  const std::string_view text(reinterpret_cast<const char*>(prefix.data()) + start,
                              static_cast<std::size_t>(length));
  HeaderParser literal(text, origin);
  literal.parse(h);
  interpret_descr(h, literal);

  const auto count = element_count(h.shape);
  if (!count || __builtin_mul_overflow(*count, kind_of(h.dtype).itemsize, &h.data_size)) {
    literal.malformed("shape " + detail::format_list(h.shape) + " of " + detail::quote(h.descr) +
                      " overflows 64 bits");
  }
  if (total_size - h.data_offset != h.data_size) {
    literal.malformed(std::to_string(total_size - h.data_offset) +
                      " data bytes follow the header, but shape " + detail::format_list(h.shape) +
                      " of " + detail::quote(h.descr) + " needs " + std::to_string(h.data_size));
  }
  return h;
}

void to_c_order_little_endian(const ArrayHeader& header, std::span<const std::byte> data,
                              std::span<std::byte> out) {
  if (data.size() != header.data_size || out.size() != header.data_size) {
    throw Error(ErrorCode::invalid_argument, "npy: converting " + std::to_string(data.size()) +
                                                 " bytes into " + std::to_string(out.size()) +
                                                 " for an array of " +
                                                 std::to_string(header.data_size) + " bytes");
  }
  const Kind& kind = kind_of(header.dtype);
  const std::uint64_t itemsize = kind.itemsize;
  const std::uint64_t swap = header.big_endian ? kind.swap_unit : 1;
  if (header.data_size == 0) return;
  const std::vector<std::uint64_t>& shape = header.shape;
  if (!header.fortran_order || shape.size() < 2) {
    if (swap == 1) {
      std::memcpy(out.data(), data.data(), data.size());
    } else {
      copy_run(data.data(), out.data(), header.data_size / itemsize, itemsize, itemsize, swap);
    }
    return;
  }
  // Fortran order: the element at index (i0, ..., in-1) lies at sum(ik * stride_k), with
  // stride_0 = 1 element and each next stride the product of the dimensions before it. The
  // output walks C order: an odometer over all but the last axis, then a strided run.
  const std::size_t rank = shape.size();
  std::vector<std::uint64_t> stride(rank);
  stride[0] = itemsize;
  for (std::size_t k = 1; k < rank; ++k) stride[k] = stride[k - 1] * shape[k - 1];
  std::vector<std::uint64_t> index(rank - 1, 0);
  const std::uint64_t run = shape[rank - 1];
  std::uint64_t src = 0;
  std::byte* dst = out.data();
  while (true) {
    copy_run(data.data() + src, dst, run, stride[rank - 1], itemsize, swap);
    dst += run * itemsize;
    std::size_t axis = rank - 1;
    while (axis-- > 0) {
      src += stride[axis];
      if (++index[axis] < shape[axis]) break;
      src -= stride[axis] * shape[axis];
      index[axis] = 0;
    }
    if (axis == static_cast<std::size_t>(-1)) return;
  }
}

}  // namespace safetensors::detail::npy
