#!/usr/bin/env bash
# Fails when code outside the OS layer calls the operating system itself (docs/ARCHITECTURE.md,
# "io"): system calls on files and memory, errno and strerror belong in src/io/, which turns
# them into Errors that keep the errno. Checked: src/ (except src/io/), python/src/, and
# tools/ except bench.cpp (it measures raw read(2) as the physical limit) and progress.cpp
# (the terminal's width and whether stderr is one): nothing the library offers.
#
#   tests/structure/check_os_calls.sh [ROOT]     checks the tree at ROOT (default: this repository)
#   tests/structure/check_os_calls.sh --self-test  shows on scratch trees that the check can fail
set -euo pipefail

# System headers that declare file, memory and errno interfaces.
headers='^[[:space:]]*#[[:space:]]*include[[:space:]]*<(unistd\.h|fcntl\.h|dirent\.h|dlfcn\.h|errno\.h|cerrno|sys/[a-z_]+\.h)>'
# Calls written as ::name( (the library's way of calling the system), not Class::name(.
calls='(^|[^A-Za-z0-9_])::(open|openat|creat|close|read|write|pread|pread64|pwrite|pwrite64|preadv|pwritev|fsync|fdatasync|sync_file_range|mmap|munmap|mremap|madvise|posix_madvise|posix_fadvise|fallocate|posix_fallocate|ftruncate|truncate|stat|fstat|fstatat|lstat|flock|fcntl|ioctl|unlink|unlinkat|rename|renameat|access|faccessat|dup|dup2|sysconf|opendir|readdir|closedir|dlopen|dlsym|dlclose|dlinfo)[[:space:]]*\('
# errno and its message tables, however they are spelled.
errors='(^|[^A-Za-z0-9_])(errno|strerror|strerror_r|perror)([^A-Za-z0-9_]|$)'

# Prints every offending line of the tree at $1 as path:line: text; returns 1 when there is one.
check_tree() {
  local root=$1 found=0 file
  while IFS= read -r file; do
    case "${file#"$root"/}" in
      src/io/* | tools/bench.cpp | tools/progress.cpp) continue ;;
    esac
    # Comments may name system calls; only code counts.
    if sed -e 's://.*$::' "$file" | grep -nE "$headers|$calls|$errors" |
      sed -e "s|^|${file#"$root"/}:|"; then
      found=1
    fi
  done < <(find "$root/src" "$root/python/src" "$root/tools" -type f \
             \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' \) 2>/dev/null | sort)
  if [ "$found" -ne 0 ]; then
    echo "OS calls outside src/io/ (route them through src/io/posix.hpp or io/memory.hpp)" >&2
    return 1
  fi
}

self_test() {
  local scratch failures=0
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' RETURN
  mkdir -p "$scratch/src/io" "$scratch/src/format" "$scratch/python/src" "$scratch/tools"
  # Allowed everywhere: the OS layer itself, names that only look like calls, comments.
  cat >"$scratch/src/io/posix.cpp" <<'CPP'
#include <unistd.h>
#include <cerrno>
int f(int fd) { return ::close(fd) == 0 ? 0 : errno; }
CPP
  cat >"$scratch/src/format/file.cpp" <<'CPP'
File File::open(const Path& p) { return Archive::open(source).read(); }  // ::pread( and errno
int closed = reopen(fd); bool errno_free = true;
CPP
  cp "$scratch/src/io/posix.cpp" "$scratch/tools/bench.cpp"
  if ! check_tree "$scratch" >/dev/null 2>&1; then
    echo "self-test: a clean tree was refused" >&2
    failures=1
  fi
  # Each kind of offence, alone in a file outside src/io/, must be refused and named.
  local offence place report
  while IFS='|' read -r place offence; do
    printf '%s\n' "$offence" >"$scratch/$place"
    report=$(check_tree "$scratch" 2>/dev/null || true)
    if ! grep -q "^$place:1:" <<<"$report"; then
      echo "self-test: not refused in $place: $offence" >&2
      failures=1
    fi
    rm "$scratch/$place"
  done <<'CASES'
src/format/bad.cpp|#include <unistd.h>
src/format/bad.cpp|#include <sys/mman.h>
src/format/bad.cpp|  #include <cerrno>
src/format/bad.cpp|const ssize_t n = ::pread(fd, out, size, 0);
src/format/bad.cpp|void* p = ::mmap (nullptr, n, PROT_READ, MAP_SHARED, fd, 0);
src/format/bad.cpp|if (x) ::close(fd);
src/format/bad.cpp|throw Error(io, strerror(e));
src/format/bad.cpp|if (errno == ENOENT) return;
src/format/bad.hpp|inline int g() { return ::fsync(3); }
python/src/bad.cpp|if (::access(path.c_str(), R_OK) != 0) return;
tools/get.cpp|int fd = ::open(path, 0);
CASES
  if [ "$failures" -ne 0 ]; then
    echo "self-test failed" >&2
    return 1
  fi
  echo "self-test passed"
}

if [ "${1-}" = "--self-test" ]; then
  self_test
else
  check_tree "${1:-$(cd "$(dirname "$0")/.." && pwd)}"
fi
