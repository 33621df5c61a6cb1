"""Whether loads onto CUDA devices can take the library's own device path (pinned staging
buffers, asynchronous copies: src/device/), and why not.

The CUDA runtime is found at run time, never linked: first the copy torch has loaded, then the
copies torch ships (its lib/ folder, or NVIDIA's wheels beside it: nvidia/cu13/lib for CUDA 13,
nvidia/cuda_runtime/lib before), then the system's. Where it cannot be
used, loads fall back to reading into host memory and torch's `.to(device)`, and
`cuda_unavailable_reason()` says why. SAFETENSORS_DEVICE_LOAD=torch forces that fallback.
GPUDirect Storage's cuFile is found the same way (NVIDIA's wheels, then the system's);
`gds_status()` says whether loads use it.
"""

import glob
import os
import sys

from libsafetensors import _core

_status = None
_cufile_candidates_added = False


def _wheel_library_dirs(component):
    """Where NVIDIA's wheels put a library on sys.path: nvidia/cu13/lib (CUDA 13 wheels keep
    every library in one folder per major version), then nvidia/<component>/lib (CUDA 12 and
    older: one wheel per library)."""
    dirs = []
    for entry in sys.path:
        dirs += sorted(glob.glob(os.path.join(entry, "nvidia", "cu[0-9]*", "lib")), reverse=True)
        dirs.append(os.path.join(entry, "nvidia", component, "lib"))
    return dirs


def _mapped_libraries(stem):
    """Paths of the libraries named stem*.so* already mapped into this process (torch's own
    CUDA runtime, once torch has initialised CUDA): the same copy is the one to use."""
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)  # address perms offset device inode [path]
                path = fields[5].strip() if len(fields) == 6 else ""
                name = os.path.basename(path)
                if name.startswith(stem) and ".so" in name and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


def _torch_runtimes():
    """Paths of the CUDA runtime libraries torch uses or ships, if any, the ones already
    loaded first."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    found = _mapped_libraries("libcudart")
    roots = [os.path.join(os.path.dirname(torch.__file__), "lib")] + _wheel_library_dirs(
        "cuda_runtime")
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "libcudart*.so*")), reverse=True):
            if path not in found:
                found.append(path)
    return found


def _cufile_libraries():
    """Paths of the cuFile libraries NVIDIA's wheels (torch dependencies) install, which are
    not on the dynamic loader's path; one already loaded first."""
    found = _mapped_libraries("libcufile.so")
    for root in _wheel_library_dirs("cufile"):
        for path in sorted(glob.glob(os.path.join(root, "libcufile.so*")), reverse=True):
            if path not in found:
                found.append(path)
    return found


def cuda_status():
    """The library's view of CUDA: {available, reason, library, device_count, ...}."""
    global _status, _cufile_candidates_added
    if not _cufile_candidates_added:
        # Where GPUDirect Storage's library is, for loads with direct="auto" (nothing is
        # loaded). Once: the search reads /proc/self/maps and globs sys.path, and every load
        # onto a CUDA device asks for the status.
        _core.add_cufile_candidates(_cufile_libraries())
        _cufile_candidates_added = True
    if _status is None or not _status["available"]:
        status = _core.cuda_status(_torch_runtimes())
        if status["available"]:
            _status = status
        else:
            return status
    return _status


def gds_status():
    """The library's view of GPUDirect Storage (cuFile): {available, compat_mode, reason,
    library}. Loads onto CUDA devices read tensors kept in their stored dtype straight from the
    files into GPU memory when it is available and not in compatibility mode (direct="auto")."""
    return _core.gds_status(_cufile_libraries())


def release_cuda_staging():
    """Frees the pinned host memory (up to 256 MiB) that loads onto CUDA devices keep for the
    next load, which then pins memory anew; returns the bytes freed, 0 when none was kept.
    Without a call it is kept until the process exits."""
    return _core.release_cuda_staging()


def cuda_unavailable_reason():
    """None when the device path can be used, else why not."""
    if os.environ.get("SAFETENSORS_DEVICE_LOAD", "") == "torch":
        return "SAFETENSORS_DEVICE_LOAD=torch asks for torch's .to(device) instead"
    status = cuda_status()
    return None if status["available"] else status["reason"]


def cuda_target(torch, device):
    """The single CUDA torch.device `device` names (str, int or torch.device), else None."""
    if isinstance(device, dict) or device is None:
        return None
    try:
        target = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return None
    if target.type != "cuda":
        return None
    if target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    return target
