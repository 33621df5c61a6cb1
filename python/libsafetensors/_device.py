"""Whether loads onto CUDA devices can take the library's own device path (pinned staging
buffers, asynchronous copies: src/device/), and why not.

The CUDA runtime is found at run time, never linked: first the copies torch ships (its lib/
folder, or the nvidia-cuda-runtime wheel beside it), then the system's. Where it cannot be
used, loads fall back to reading into host memory and torch's `.to(device)`, and
`cuda_unavailable_reason()` says why. SAFETENSORS_DEVICE_LOAD=torch forces that fallback.
GPUDirect Storage's cuFile is found the same way (the nvidia-cufile wheel, then the system's);
`gds_status()` says whether loads use it.
"""

import glob
import os
import sys

from libsafetensors import _core

_status = None


def _torch_runtimes():
    """Paths of the CUDA runtime libraries torch's installation ships, if any."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    roots = [os.path.join(os.path.dirname(torch.__file__), "lib")]
    for entry in sys.path:
        roots.append(os.path.join(entry, "nvidia", "cuda_runtime", "lib"))
    found = []
    for root in roots:
        found += sorted(glob.glob(os.path.join(root, "libcudart*.so*")), reverse=True)
    return found


def _cufile_libraries():
    """Paths of the cuFile libraries the nvidia-cufile wheel (a torch dependency) installs,
    which are not on the dynamic loader's path."""
    found = []
    for entry in sys.path:
        found += sorted(glob.glob(os.path.join(entry, "nvidia", "cufile", "lib", "libcufile.so*")),
                        reverse=True)
    return found


def cuda_status():
    """The library's view of CUDA: {available, reason, library, device_count, ...}."""
    global _status
    # Where GPUDirect Storage's library is, for loads with direct="auto" (nothing is loaded).
    _core.add_cufile_candidates(_cufile_libraries())
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
