// The pickle scanner: finds every pickle in a raw pickle, a torch zip or legacy checkpoint,
// a .npy or an .npz, runs the data-only unpickler over it in scan mode and sums up.
#include "safetensors/scan.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string_view>

#include "convert/detect.hpp"
#include "npy/npy.hpp"
#include "pickle/allowlist.hpp"
#include "pickle/unpickler.hpp"
#include "safetensors/error.hpp"
#include "safetensors/source.hpp"
#include "zip/archive.hpp"

namespace safetensors {
namespace {

namespace npy = detail::npy;
namespace pickle = detail::pickle;
namespace zip = detail::zip;

using Bytes = std::span<const std::byte>;

// The first pickle of a legacy torch file is this number (LONG1), little-endian.
constexpr std::array<unsigned char, 10> legacy_magic = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                                        0x20, 0x6a, 0xa8, 0x50, 0x19};
// What follows the magic number in a legacy file: protocol, sys_info, the object, the keys.
constexpr std::array<const char*, 4> legacy_parts = {"protocol", "sys_info", "main",
                                                     "storage_keys"};
// How many pickles in a row after the first we still look at in a raw pickle file.
constexpr int max_trailing_pickles = 16;

bool contains(Bytes bytes, std::string_view needle) {
  const auto* begin = reinterpret_cast<const char*>(bytes.data());
  return std::string_view(begin, bytes.size()).find(needle) != std::string_view::npos;
}

// A plausible first opcode: PROTO with a known protocol, or a protocol 0-1 opcode.
bool looks_like_pickle(Bytes bytes) {
  return detail::detect_format(bytes) == detail::InputFormat::pickle;
}

// True when a .npy header literal names an object dtype ('|O', '<O8'...), alone or inside
// a structured descr: numpy then stores the array as a pickle after the header.
bool has_object_dtype(std::string_view header) {
  for (std::size_t i = 0; i < header.size(); ++i) {
    const char quote = header[i];
    if (quote != '\'' && quote != '"') continue;
    std::size_t j = i + 1;
    if (j < header.size() && std::string_view("|<>=").find(header[j]) != std::string_view::npos)
      ++j;
    if (j >= header.size() || header[j] != 'O') continue;
    ++j;
    while (j < header.size() && header[j] >= '0' && header[j] <= '9') ++j;
    if (j < header.size() && header[j] == quote) return true;
  }
  return false;
}

class Scanner {
 public:
  explicit Scanner(ScanReport& report) : report_(report) {}

  void scan(const Source& source) {
    const Bytes bytes = source.mapped();
    switch (detail::detect_format(bytes)) {
      case detail::InputFormat::zip:
        scan_zip(source);
        return;
      case detail::InputFormat::npy:
        report_.format = "npy";
        scan_npy(bytes, "", 0);
        return;
      case detail::InputFormat::pickle:
        scan_raw(bytes);
        return;
      case detail::InputFormat::unknown:
        break;
    }
    report_.format = "unknown";
    unreadable("", 0, "not a pickle, PyTorch checkpoint, .npy or .npz file");
  }

  ScanVerdict verdict() const {
    const bool dangerous = std::any_of(report_.findings.begin(), report_.findings.end(),
                                       [](const ScanFinding& f) { return f.dangerous; }) ||
                           std::any_of(report_.globals.begin(), report_.globals.end(),
                                       [](const ScanGlobal& g) { return !g.allowed; });
    if (dangerous) return ScanVerdict::dangerous;
    if (broken_ || !read_something_) return ScanVerdict::unreadable;
    return ScanVerdict::clean;
  }

  void unreadable(std::string location, std::uint64_t offset, std::string message) {
    report_.findings.push_back({std::move(location), offset, std::move(message), false});
    broken_ = true;
  }

 private:
  void finding(std::string location, std::uint64_t offset, std::string message, bool dangerous) {
    report_.findings.push_back({std::move(location), offset, std::move(message), dangerous});
  }

  // One pickle at `bytes[0]`, which lies at `base` in the file or zip entry.
  pickle::Pickle scan_pickle(Bytes bytes, const std::string& location, std::uint64_t base) {
    pickle::Options options;
    options.mode = pickle::Mode::scan;
    options.allowed = pickle::is_allowed_global;
    pickle::Pickle p = pickle::unpickle(bytes, options, location);
    for (const pickle::GlobalRef& g : p.globals) {
      report_.globals.push_back({location, g.module, g.name, base + g.offset, g.allowed});
    }
    for (const pickle::Finding& f : p.findings) {
      report_.findings.push_back({location, base + f.offset, f.message, f.dangerous});
    }
    if (p.complete) {
      read_something_ = true;
    } else {
      broken_ = true;
    }
    return p;
  }

  // A pickle that should be all there is (a .pkl entry, an object array's payload).
  void scan_whole_pickle(Bytes bytes, const std::string& location, std::uint64_t base) {
    const pickle::Pickle p = scan_pickle(bytes, location, base);
    if (p.complete) check_trailing(bytes, p.end_offset, location, base);
  }

  // Bytes after STOP are invisible to pickle.load but not to every other tool: a classic
  // way to hide a second payload or a zip from one reader of a polyglot.
  void check_trailing(Bytes bytes, std::uint64_t end, const std::string& location,
                      std::uint64_t base) {
    if (end >= bytes.size()) return;
    const Bytes rest = bytes.subspan(end);
    std::string message = std::to_string(rest.size()) + " bytes follow the pickle's STOP";
    if (contains(rest, "PK\x03\x04") || contains(rest, "PK\x05\x06")) {
      message += ", among them a zip archive (a file that is both a pickle and a zip)";
    } else if (looks_like_pickle(rest)) {
      message += ", apparently another pickle";
    }
    finding(location, base + end, message, true);
    std::uint64_t offset = end;
    for (int i = 0; i < max_trailing_pickles && offset < bytes.size(); ++i) {
      const Bytes next = bytes.subspan(offset);
      if (!looks_like_pickle(next)) break;
      const pickle::Pickle p = scan_pickle(
          next,
          location + (location.empty() ? "" : " ") + "pickle at " + std::to_string(base + offset),
          base + offset);
      if (!p.complete) break;
      offset += p.end_offset;
    }
  }

  bool is_legacy_magic(const pickle::Pickle& p) {
    const pickle::Value& root = p.at(p.root);
    return root.kind == pickle::Kind::big_integer && root.text.size() == legacy_magic.size() &&
           std::memcmp(root.text.data(), legacy_magic.data(), legacy_magic.size()) == 0;
  }

  void scan_raw(Bytes bytes) {
    report_.format = "pickle";
    const pickle::Pickle first = scan_pickle(bytes, "", 0);
    if (!first.complete) return;
    if (!is_legacy_magic(first)) {
      check_trailing(bytes, first.end_offset, "", 0);
      return;
    }
    // Legacy torch: the pickles, then raw storage bytes that are not ours to parse here.
    report_.format = "torch-legacy";
    std::uint64_t offset = first.end_offset;
    for (const char* part : legacy_parts) {
      if (offset >= bytes.size()) {
        unreadable(part, offset,
                   "the legacy checkpoint ends before its " + std::string(part) + " pickle");
        return;
      }
      const pickle::Pickle p = scan_pickle(bytes.subspan(offset), part, offset);
      if (!p.complete) return;
      offset += p.end_offset;
    }
  }

  void scan_npy(Bytes bytes, const std::string& location, std::uint64_t base) {
    try {
      // Only whether it parses matters here: parse_header throws on a malformed header.
      (void)npy::parse_array_header(bytes, bytes.size(),
                                    location.empty() ? report_.path.string() : location);
      read_something_ = true;  // a plain numeric array: no pickle, nothing runs
      return;
    } catch (const Error& e) {
      const std::optional<npy::HeaderExtent> extent = npy::header_extent(bytes);
      if (!extent) {
        unreadable(location, 0, e.what());
        return;
      }
      const auto [header_start, header_length] = *extent;
      if (header_length > bytes.size() - header_start) {
        unreadable(location, 0, e.what());
        return;
      }
      const std::string_view header(reinterpret_cast<const char*>(bytes.data()) + header_start,
                                    header_length);
      if (!has_object_dtype(header)) {
        unreadable(location, 0, e.what());
        return;
      }
      const std::uint64_t data_offset = header_start + header_length;
      finding(location, base + data_offset, "object array: its data is a pickle", false);
      scan_whole_pickle(bytes.subspan(data_offset), location, base + data_offset);
    }
  }

  void scan_zip(const Source& source) {
    std::optional<zip::Archive> archive;
    try {
      archive.emplace(zip::Archive::open(source));
    } catch (const Error& e) {
      report_.format = "zip";
      // The strict reader's refusals (duplicate names, mismatched headers...) are the
      // differentials scanners have been bypassed with.
      finding("", 0, std::string("zip archive refused: ") + e.what(), true);
      return;
    }
    bool pickles = false, arrays = false;
    for (const zip::Entry& entry : archive->entries()) {
      pickles = pickles || entry.name.ends_with(".pkl");
      arrays = arrays || entry.name.ends_with(".npy");
    }
    report_.format = pickles ? "torch-zip" : arrays ? "npz" : "zip";
    if (!pickles && !arrays) {
      unreadable("", 0, "zip archive without a .pkl or .npy entry");
      return;
    }
    for (const zip::Entry& entry : archive->entries()) {
      const bool is_pickle = entry.name.ends_with(".pkl");
      if (!is_pickle && !entry.name.ends_with(".npy")) continue;
      if (entry.name.ends_with("/constants.pkl") || entry.name == "constants.pkl") {
        finding(entry.name, 0, "TorchScript archive (torch.jit.load compiles its code/ entries)",
                false);
      }
      std::vector<std::byte> inflated;
      Bytes bytes;
      try {
        bytes = archive->stored_view(entry);
        if (bytes.size() != entry.size) {
          inflated = archive->read(entry);
          bytes = inflated;
        }
      } catch (const Error& e) {
        finding(entry.name, 0, std::string("entry refused: ") + e.what(), true);
        continue;
      }
      if (is_pickle) {
        scan_whole_pickle(bytes, entry.name, 0);
      } else {
        scan_npy(bytes, entry.name, 0);
      }
    }
  }

  ScanReport& report_;
  bool broken_ = false;          // some pickle or array could not be read to the end
  bool read_something_ = false;  // at least one pickle or array was read completely
};

}  // namespace

std::string_view verdict_name(ScanVerdict verdict) noexcept {
  switch (verdict) {
    case ScanVerdict::clean:
      return "clean";
    case ScanVerdict::dangerous:
      return "dangerous";
    case ScanVerdict::unreadable:
      return "unreadable";
  }
  return "unreadable";
}

ScanReport scan_file(const std::filesystem::path& path) {
  ScanReport report;
  report.path = path;
  report.format = "unknown";
  Scanner scanner(report);
  try {
    std::unique_ptr<Source> source = open_mmap_source(path);
    std::vector<std::byte> copy;  // only when the file could not be mapped
    if (source->mapped().size() != source->size()) {
      copy.resize(source->size());
      source->read_at(0, copy);
      source = make_memory_source(copy, path.string());
    }
    scanner.scan(*source);
  } catch (const Error& e) {
    scanner.unreadable("", 0, e.what());
  } catch (const std::bad_alloc&) {
    scanner.unreadable("", 0, "out of memory while scanning");
  }
  report.verdict = scanner.verdict();
  return report;
}

}  // namespace safetensors
