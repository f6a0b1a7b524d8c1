"""Is there a CUDA GPU? Answered without importing torch, so the first popup appears at once.

Importing torch takes seconds; the wizard only needs a yes/no to pick defaults (AdamW8bit and fp16 with CUDA, AdamW
and fp32 without). The NVIDIA driver library answers that directly: cuInit succeeds and cuDeviceGetCount reports
at least one device. The trainer still checks with torch when it starts.
"""

from __future__ import annotations

import ctypes
import functools
import sys

CUDA_SUCCESS = 0


def _driver_library_names() -> tuple[str, ...]:
    if sys.platform == "win32":
        return ("nvcuda.dll",)
    if sys.platform == "darwin":
        return ()
    return ("libcuda.so.1", "libcuda.so")


@functools.cache
def cuda_available() -> bool:
    """True when the NVIDIA driver is installed and sees at least one GPU; cached for the process."""
    for name in _driver_library_names():
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        return _driver_sees_a_device(driver)
    return False


def _driver_sees_a_device(driver: ctypes.CDLL) -> bool:
    try:
        if driver.cuInit(0) != CUDA_SUCCESS:
            return False
        count = ctypes.c_int(0)
        if driver.cuDeviceGetCount(ctypes.byref(count)) != CUDA_SUCCESS:
            return False
    except AttributeError:  # not a CUDA driver library after all
        return False
    return count.value > 0
