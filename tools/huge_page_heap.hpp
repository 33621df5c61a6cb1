// Backing the command's heap with transparent huge pages.
#pragma once

#include <string>
#include <vector>

namespace safetensors::cli {

/// Whether every path names a safetensors file, or a checkpoint (directory or index), whose
/// headers are too small for the huge-page heap to pay for its exec. False for anything that
/// cannot be read as such (a file that is not safetensors, a missing one), which keeps the
/// huge-page heap.
bool headers_are_small(const std::vector<std::string>& paths) noexcept;

/// Re-executes this program once with glibc's heap on transparent huge pages
/// (`glibc.malloc.hugetlb=1` added to GLIBC_TUNABLES) and does not return, unless the setting
/// is there already (in any value: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` keeps the plain
/// heap), the system never uses huge pages, or the exec fails; then it returns and the command
/// goes on as it is.
void reexec_with_huge_page_heap(char** argv) noexcept;

}  // namespace safetensors::cli
