#include "device/gds.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "error/messages.hpp"
#include "io/dynamic_library.hpp"
#include "io/posix.hpp"
#include "safetensors/error.hpp"

namespace safetensors::detail {

// cuFile's C ABI as NVIDIA's public cufile.h declares it (GDS 1.x, CUDA 11.4 to 13), without
// including it:
// - CUfileError_t is a struct of two ints {CUfileOpError err; CUresult cu_err}, returned by
//   value; err 0 is CU_FILE_SUCCESS, the other codes are 5000 and up (CU_FILE_ERROR_BASE).
// - CUfileDescr_t is {CUfileFileHandleType type; union {int fd; void* handle;} handle;
//   const CUfileFSOps_t* fs_ops;}, type CU_FILE_HANDLE_TYPE_OPAQUE_FD = 1, fs_ops null for
//   kernel file systems. CUfileHandle_t is an opaque pointer.
// - cuFileRead(handle, device base, size, file offset, offset from the base) returns the bytes
//   read (fewer at the end of the file), -1 with errno set on a system error, or the negative
//   of a CUfileOpError.
// - CUfileDrvProps_t begins with struct nvfs {unsigned major_version, minor_version; size_t
//   poll_thresh_size, max_direct_io_size; unsigned dstatusflags, dcontrolflags;} followed by
//   unsigned fflags and five more unsigned limits. Only the nvfs part is read; the buffer
//   handed to cuFileDriverGetProperties is padded in case a later version adds fields.
// - cuFileDriverClose was renamed cuFileDriverClose_v2 in the exported symbols (the header
//   maps the old name); neither is called (see try_cufile).
struct CuFileError {
  int err = 0;
  int cu_err = 0;
};

struct CuFileDescr {
  int type = 0;
  union {
    int fd;
    void* handle;
  } handle{};
  const void* fs_ops = nullptr;
};
static_assert(sizeof(void*) != 8 || sizeof(CuFileDescr) == 24,
              "CUfileDescr_t is 24 bytes on LP64 (int, pointer-aligned union, pointer)");

struct CuFileNvfsProps {
  unsigned major_version = 0;
  unsigned minor_version = 0;
  std::size_t poll_thresh_size = 0;
  std::size_t max_direct_io_size = 0;
  unsigned dstatusflags = 0;
  unsigned dcontrolflags = 0;
};

struct CuFileDriverProps {
  CuFileNvfsProps nvfs;
  unsigned fflags = 0;
  unsigned limits[5] = {};
  // Room for fields a later cufile.h may append; the library writes only its own struct.
  unsigned char reserve[512] = {};
};

struct CuFile {
  DynamicLibrary library;
  CuFileError (*driver_open)() = nullptr;
  CuFileError (*driver_get_properties)(CuFileDriverProps*) = nullptr;  // optional
  CuFileError (*handle_register)(void**, CuFileDescr*) = nullptr;
  void (*handle_deregister)(void*) = nullptr;
  long (*read)(void*, void*, std::size_t, long, long) = nullptr;  // ssize_t, off_t: long on LP64
};

namespace {

constexpr int handle_type_opaque_fd = 1;  // CU_FILE_HANDLE_TYPE_OPAQUE_FD

std::mutex cufile_mutex;
// Loaded once and kept for the process: its driver stays open (see try_cufile).
std::unique_ptr<CuFile> loaded_cufile;
std::vector<std::string> extra_candidates;  // with cufile_mutex held

// With cufile_mutex held.
std::vector<std::string> candidates() {
  if (const char* forced = std::getenv("SAFETENSORS_CUFILE"); forced != nullptr && *forced)
    return {forced};
  std::vector<std::string> names = extra_candidates;
  names.emplace_back("libcufile.so.0");
  names.emplace_back("libcufile.so");
  return names;
}

std::string error_text(CuFileError error) {
  std::string text = "cuFile error " + std::to_string(error.err);
  if (error.cu_err != 0) text += " (CUDA driver error " + std::to_string(error.cu_err) + ")";
  return text;
}

std::unique_ptr<CuFile> open_cufile(const std::string& name, std::string& why) {
  auto cufile = std::make_unique<CuFile>();
  cufile->library = DynamicLibrary::open(name, why);
  if (!cufile->library) return nullptr;
  const DynamicLibrary& l = cufile->library;
  const auto resolve = [&](const char* symbol, auto& fn) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(l.symbol(symbol));
    return fn != nullptr;
  };
  // The first entry point missing is named.
  const char* missing = nullptr;
  const auto need = [&](const char* symbol, auto& fn) {
    if (!resolve(symbol, fn) && missing == nullptr) missing = symbol;
  };
  need("cuFileDriverOpen", cufile->driver_open);
  need("cuFileHandleRegister", cufile->handle_register);
  need("cuFileHandleDeregister", cufile->handle_deregister);
  need("cuFileRead", cufile->read);
  resolve("cuFileDriverGetProperties", cufile->driver_get_properties);
  if (missing != nullptr) {
    why = l.name() + " lacks " + missing;
    return nullptr;
  }
  // Opened once for the process; cuFile would open it on the first registration anyway, but
  // opening it here tells us now whether the driver can be used.
  const CuFileError opened = cufile->driver_open();
  if (opened.err != 0) {
    why = l.name() + ": cuFileDriverOpen failed: " + error_text(opened);
    return nullptr;
  }
  return cufile;
}

// With cufile_mutex held.
std::string candidates_text() {
  std::string text;
  for (const std::string& name : candidates()) text += (text.empty() ? "" : ", ") + name;
  return text;
}

}  // namespace

void add_cufile_candidates(const std::vector<std::string>& paths) {
  std::lock_guard lock(cufile_mutex);
  for (const std::string& path : paths) {
    if (std::find(extra_candidates.begin(), extra_candidates.end(), path) == extra_candidates.end())
      extra_candidates.push_back(path);
  }
}

std::string cufile_candidates_text() {
  std::lock_guard lock(cufile_mutex);
  return candidates_text();
}

const CuFile* try_cufile(std::string& why) {
  std::lock_guard lock(cufile_mutex);
  if (loaded_cufile) return loaded_cufile.get();
  const std::vector<std::string> names = candidates();
  std::string tried;
  for (const std::string& name : names) {
    std::string reason;
    std::unique_ptr<CuFile> cufile = open_cufile(name, reason);
    if (cufile) {
      loaded_cufile = std::move(cufile);
      return loaded_cufile.get();
    }
    tried += (tried.empty() ? "" : "; ") + reason;
  }
  why = "no cuFile library could be used (tried " +
        std::string(std::getenv("SAFETENSORS_CUFILE") != nullptr &&
                            *std::getenv("SAFETENSORS_CUFILE") != '\0'
                        ? "the library named by SAFETENSORS_CUFILE"
                        : candidates_text()) +
        "): " + tried;
  return nullptr;
}

bool cufile_compat_mode(const CuFile& cufile, std::string& why) {
  const char* forced = std::getenv("CUFILE_FORCE_COMPAT_MODE");
  if (forced != nullptr && (std::strcmp(forced, "true") == 0 || std::strcmp(forced, "1") == 0)) {
    why = "cuFile is forced into compatibility mode (CUFILE_FORCE_COMPAT_MODE)";
    return true;
  }
  if (cufile.driver_get_properties == nullptr) {
    why = cufile.library.name() +
          " lacks cuFileDriverGetProperties, so whether it reads by DMA cannot be told";
    return true;
  }
  CuFileDriverProps props;
  const CuFileError got = cufile.driver_get_properties(&props);
  if (got.err != 0) {
    why = "cuFileDriverGetProperties failed: " + error_text(got);
    return true;
  }
  // Conservative: DMA is taken to need the nvidia-fs kernel driver (its version is 0 when it
  // is not loaded) and at least one file system it supports. Newer cuFile can also DMA
  // through the kernel's PCI P2PDMA without nvidia-fs; such a setup is reported as
  // compatibility mode here and used only when a load asks for direct reads (DirectReads::on).
  if (props.nvfs.major_version == 0) {
    why =
        "cuFile runs in compatibility mode (the nvidia-fs driver is not loaded): its reads "
        "go through the host, slower than the pinned ring";
    return true;
  }
  if (props.nvfs.dstatusflags == 0) {
    why = "cuFile's driver (nvidia-fs " + std::to_string(props.nvfs.major_version) + "." +
          std::to_string(props.nvfs.minor_version) +
          ") supports no file system here: its reads would go through compatibility mode";
    return true;
  }
  return false;
}

CuFileHandles::~CuFileHandles() {
  for (auto& [fd, entry] : handles_) {
    if (entry.handle != nullptr) cufile_.handle_deregister(entry.handle);
  }
}

bool CuFileHandles::read(const DirectFile& file, std::uint64_t offset, std::byte* dest,
                         std::size_t bytes, std::string& why) {
  const int fd = file.direct_fd >= 0 ? file.direct_fd : file.fd;
  const std::string& name = *file.name;
  void* handle = nullptr;
  {
    std::lock_guard lock(mutex_);
    auto [it, added] = handles_.try_emplace(fd);
    if (added) {
      CuFileDescr descr;
      descr.type = handle_type_opaque_fd;
      descr.handle.fd = fd;
      const CuFileError registered = cufile_.handle_register(&it->second.handle, &descr);
      if (registered.err != 0) {
        it->second.handle = nullptr;
        it->second.refused = "cuFileHandleRegister refused " + name + " (" +
                             (file.direct_fd >= 0 ? "O_DIRECT" : "buffered, O_DIRECT refused") +
                             "): " + error_text(registered);
      }
    }
    if (it->second.handle == nullptr) {
      why = it->second.refused;
      return false;
    }
    handle = it->second.handle;
  }
  std::size_t done = 0;
  while (done < bytes) {
    const std::uint64_t at = offset + done;
    const long got =
        cufile_.read(handle, dest, bytes - done, static_cast<long>(at), static_cast<long>(done));
    if (got > 0) {
      done += static_cast<std::size_t>(got);
      continue;
    }
    if (got == 0) {
      fail(ErrorCode::io, name,
           "cuFileRead at offset " + std::to_string(at) + " returned 0 bytes with " +
               std::to_string(bytes - done) + " of " + std::to_string(bytes) +
               " still to read (the file ends early)");
    }
    const std::string what = "cuFileRead of " + std::to_string(bytes - done) + " bytes at offset " +
                             std::to_string(at) + " into device memory failed";
    if (got == -1) throw_os_error(name, what, last_os_error());
    fail(ErrorCode::io, name, what + ": cuFile error " + std::to_string(-got));
  }
  return true;
}

}  // namespace safetensors::detail

namespace safetensors {

GdsStatus gds_status() {
  GdsStatus status;
  std::string why;
  const detail::CuFile* cufile = detail::try_cufile(why);
  if (cufile == nullptr) {
    status.reason = why;
    return status;
  }
  status.library = cufile->library.name();
  status.available = true;
  status.compat_mode = detail::cufile_compat_mode(*cufile, status.reason);
  return status;
}

}  // namespace safetensors
