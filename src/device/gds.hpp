// GPUDirect Storage through NVIDIA's cuFile library, loaded at run time (dlopen, as the CUDA
// runtime is): file bytes DMA'd from storage into device memory without a host bounce. Nothing
// includes cufile.h; the entry points, struct layouts and constants relied on are listed in
// gds.cpp and docs/ARCHITECTURE.md ("device", GPUDirect Storage).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "device/device_api.hpp"
#include "safetensors/device.hpp"

namespace safetensors::detail {

struct CuFile;

/// The process's cuFile library with its driver opened, loaded on first success and kept
/// (never closed: cuFileDriverClose at exit could run after the CUDA runtime is torn down);
/// nullptr with `why` (libraries tried, a missing symbol, or cuFileDriverOpen's error). A
/// failed attempt is not remembered.
const CuFile* try_cufile(std::string& why);

/// Whether cuFile reads through its own POSIX fallback (compatibility mode) rather than by
/// DMA, and if so why (one sentence); from cuFileDriverGetProperties.
bool cufile_compat_mode(const CuFile& cufile, std::string& why);

/// Files registered with cuFile (cuFileHandleRegister), one handle per descriptor, for one
/// load; deregistered when this goes. Thread-safe.
class CuFileHandles {
 public:
  explicit CuFileHandles(const CuFile& cufile) : cufile_(cufile) {}
  CuFileHandles(const CuFileHandles&) = delete;
  CuFileHandles& operator=(const CuFileHandles&) = delete;
  ~CuFileHandles();

  /// Reads `bytes` at `offset` of `file` into device memory `dest` (cuFileRead, repeated on
  /// short reads). Returns false, having written nothing, when cuFile refuses to register the
  /// file (`why` says why; the refusal is remembered for the file); throws Error(io) naming
  /// the file, the offset and cuFile's error when a read fails.
  bool read(const DirectFile& file, std::uint64_t offset, std::byte* dest, std::size_t bytes,
            std::string& why);

 private:
  struct Entry {
    void* handle = nullptr;  // CUfileHandle_t; nullptr when refused
    std::string refused;
  };
  const CuFile& cufile_;
  std::mutex mutex_;
  std::map<int, Entry> handles_;
};

/// Library paths tried after SAFETENSORS_CUFILE and before the default sonames, e.g. the copy
/// a Python framework's wheels ship (the Python package adds those in nvidia/cu13/lib or
/// nvidia/cufile/lib). Kept for the process.
void add_cufile_candidates(const std::vector<std::string>& paths);

/// Library names tried: SAFETENSORS_CUFILE when set, else those added, libcufile.so.0 and
/// libcufile.so.
std::string cufile_candidates_text();

}  // namespace safetensors::detail
