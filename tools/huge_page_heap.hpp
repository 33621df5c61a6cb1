// Backing the command's heap with transparent huge pages.
#pragma once

namespace safetensors::cli {

/// Re-executes this program once with glibc's heap on transparent huge pages
/// (`glibc.malloc.hugetlb=1` added to GLIBC_TUNABLES) and does not return, unless the setting
/// is there already (in any value: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` keeps the plain
/// heap), the system never uses huge pages, or the exec fails; then it returns and the command
/// goes on as it is.
void reexec_with_huge_page_heap(char** argv) noexcept;

}  // namespace safetensors::cli
