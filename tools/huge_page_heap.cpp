// glibc puts its heap on transparent huge pages only when told so at startup, through the
// tunable glibc.malloc.hugetlb in GLIBC_TUNABLES, which it reads before main; there is no
// call to switch it on later. Opening a file of 200,000 tensors allocates about 90 MB (the
// parsed header, the JSON parser's work space, the names and shapes), and with 4 KiB pages
// each page costs a fault: 19,000 of them, a third of the CPU time of `safetensors validate`
// on the development VM (2,700 faults and 76 instead of 106 ms of CPU with huge pages, the
// least of 10 runs each; README, "Where `validate` of 200,000 tensors spent its time", also
// gives the wall times, whose tail is longer with huge pages on that VM). The exec itself
// costs about 2 ms of CPU there (a file of one tensor: validate 3.8 ms, 1.9 ms without).
#include "huge_page_heap.hpp"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "checkpoint_input.hpp"
#include "safetensors/header.hpp"
#include "safetensors/source.hpp"

namespace safetensors::cli {
namespace {

constexpr const char* tunable = "glibc.malloc.hugetlb";

// Below this header size the plain heap is as fast: `validate` of 40,000 tensors (a 4.4 MB
// header) took 17 ms of CPU either way on the development VM, of 20,000 (2.2 MB) 10 ms on the
// plain heap against 12 ms with the exec and huge pages, of 5,000 4 against 6 ms.
constexpr std::uint64_t min_header_for_huge_pages = std::uint64_t{4} << 20;

std::uint64_t header_length(const std::filesystem::path& path) {
  const std::unique_ptr<Source> source = open_pread_source(path);
  std::byte prefix[8];
  const std::span<std::byte> bytes(prefix, std::min<std::uint64_t>(8, source->size()));
  source->read_at(0, bytes);
  return parse_header_length(bytes, source->size(), path.string());
}

// The header bytes a command reading `path` holds at once: the file's, or for a checkpoint
// (a directory, or an index) those of every .safetensors file in its directory.
std::uint64_t header_bytes(const std::string& path) {
  if (!is_checkpoint_path(path)) return header_length(path);
  std::filesystem::path directory = std::filesystem::is_directory(path)
                                        ? std::filesystem::path(path)
                                        : std::filesystem::path(path).parent_path();
  if (directory.empty()) directory = ".";
  std::uint64_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(directory)) {
    if (entry.path().extension() == ".safetensors") total += header_length(entry.path());
    if (total >= min_header_for_huge_pages) break;  // big enough: the other shards can wait
  }
  return total;
}

// False when transparent huge pages are switched off ("[never]"), so asking is useless.
bool huge_pages_possible() {
  std::ifstream setting("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string text;
  std::getline(setting, text);
  return !text.empty() && text.find("[never]") == std::string::npos;
}

// Whether every path names a safetensors file, or a checkpoint (directory or index), whose
// headers are too small for the huge-page heap to pay for its exec. False for anything that
// cannot be read as such (a file that is not safetensors, a missing one).
bool headers_are_small(const std::vector<std::string>& paths) noexcept {
  try {
    for (const std::string& path : paths) {
      if (header_bytes(path) >= min_header_for_huge_pages) return false;
    }
    return true;
  } catch (...) {
    return false;  // not a safetensors file (or unreadable): the command will say so
  }
}

}  // namespace

void reexec_with_huge_page_heap(
    char** argv, const std::function<std::vector<std::string>()>& header_inputs) noexcept {
  try {
    const char* current = std::getenv("GLIBC_TUNABLES");
    const std::string tunables = current ? current : "";
    if (tunables.find(tunable) != std::string::npos || !huge_pages_possible()) return;
    // Last, since it opens the inputs: not again in the process the exec starts.
    if (header_inputs && headers_are_small(header_inputs())) return;
    const std::string value =
        tunables + (tunables.empty() ? "" : ":") + std::string(tunable) + "=1";
    if (::setenv("GLIBC_TUNABLES", value.c_str(), 1) != 0) return;
    ::execv("/proc/self/exe", argv);
    // Still here: the exec failed (no /proc, say). Go on without it, leaving the environment
    // as it was for anything this process starts.
    if (current) {
      ::setenv("GLIBC_TUNABLES", current, 1);
    } else {
      ::unsetenv("GLIBC_TUNABLES");
    }
  } catch (...) {
    // Out of memory building the string: go on without.
  }
}

}  // namespace safetensors::cli
