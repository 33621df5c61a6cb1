// Backing the command's heap with transparent huge pages.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace safetensors::cli {

/// Re-executes this program once with glibc's heap on transparent huge pages
/// (`glibc.malloc.hugetlb=1` added to GLIBC_TUNABLES) and does not return, unless the setting
/// is there already (in any value: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` keeps the plain
/// heap), the system never uses huge pages, the command reads only headers (`header_inputs`
/// is set) and every input, a file or a checkpoint's shards together, has under 4 MiB of
/// them, or the exec fails; then it returns and the command goes on as it is.
void reexec_with_huge_page_heap(
    char** argv, const std::function<std::vector<std::string>()>& header_inputs) noexcept;

}  // namespace safetensors::cli
