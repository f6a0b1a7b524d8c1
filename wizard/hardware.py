"""The GPU: is there a CUDA device, which PyTorch build runs on it, and can the installed PyTorch use it?

`cuda_available` answers without importing torch, so the first popup appears at once: importing torch takes seconds,
and the wizard only needs a yes/no to pick defaults (AdamW8bit and fp16 with CUDA, AdamW and fp32 without). The NVIDIA
driver library answers that directly: cuInit succeeds and cuDeviceGetCount reports at least one device. The trainer
still checks with torch when it starts.

`read_nvidia` asks nvidia-smi for the driver's CUDA version and each card's compute capability. From these,
`choose_cuda_build` names the PyTorch CUDA build that has kernels for the card and runs on the driver: run_popup.bat
installs that build (`python -m wizard.hardware` prints its name), and the pre-flight report warns, with the command
that installs it, when the PyTorch in use is a CPU build or has no kernels for the card (`torch_gpu_warning`).
"""

from __future__ import annotations

import ctypes
import functools
import re
import subprocess
import sys
from dataclasses import dataclass

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


# --- which PyTorch build runs on this GPU -------------------------------------------------------------------------

PYTORCH_INDEX = "https://download.pytorch.org/whl/"


@dataclass(frozen=True)
class CudaBuild:
    """One of PyTorch's CUDA builds: its name (the wheel index's folder and the version's local label, as in
    torch==2.13.0+cu130), the CUDA version it needs from the driver, and the GPUs it has kernels for."""

    name: str
    cuda: tuple[int, int]
    arch_list: tuple[str, ...]  # as torch.cuda.get_arch_list() names them


# The CUDA builds of torch 2.13 for Windows and Linux x86-64, newest first: the stable CUDA 12.6 and 13.0 of
# pytorch/pytorch's RELEASE.md ("Release Compatibility Matrix" and "PyTorch CUDA Support Matrix", 2.12 to 2.14; the
# experimental 13.2 is left out). Only 13.0 has Blackwell (RTX 50xx) kernels; only 12.6 has Maxwell, Pascal and Volta.
CUDA_BUILDS = (
    CudaBuild("cu130", (13, 0), ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")),
    CudaBuild("cu126", (12, 6), ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")),
)


@dataclass(frozen=True)
class NvidiaGpu:
    name: str
    capability: tuple[int, int] | None  # None: the driver's nvidia-smi is too old to tell


@dataclass(frozen=True)
class NvidiaReport:
    """What nvidia-smi says: the highest CUDA version the driver supports (None if unreadable) and the cards."""

    driver_cuda: tuple[int, int] | None
    gpus: tuple[NvidiaGpu, ...]


def read_nvidia(timeout_s: float = 10.0) -> NvidiaReport | None:
    """Ask nvidia-smi; None when it is missing or does not answer (no NVIDIA GPU, or no working driver)."""
    header = _nvidia_smi([], timeout_s)
    if header is None:
        return None
    listing = _nvidia_smi(["--query-gpu=name,compute_cap", "--format=csv,noheader"], timeout_s)
    if listing is None:  # drivers before compute_cap was a field
        listing = _nvidia_smi(["--query-gpu=name", "--format=csv,noheader"], timeout_s) or ""
    return NvidiaReport(parse_driver_cuda(header), parse_gpus(listing))


def _nvidia_smi(arguments: list[str], timeout_s: float) -> str | None:
    try:
        answer = subprocess.run(["nvidia-smi", *arguments], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return answer.stdout if answer.returncode == 0 else None


def parse_driver_cuda(header: str) -> tuple[int, int] | None:
    """The "CUDA Version: 13.0" of nvidia-smi's table header: the newest CUDA the driver runs."""
    found = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", header)
    return (int(found[1]), int(found[2])) if found else None


def parse_gpus(listing: str) -> tuple[NvidiaGpu, ...]:
    """The lines "NVIDIA GeForce RTX 4090, 8.9" (or only the name, from an older driver) of a csv,noheader query."""
    gpus = []
    for line in filter(str.strip, listing.splitlines()):
        name, _, capability = line.rpartition(",")
        found = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", capability)
        if found:
            gpus.append(NvidiaGpu(name.strip(), (int(found[1]), int(found[2]))))
        else:
            gpus.append(NvidiaGpu(line.strip(), None))
    return tuple(gpus)


def has_kernels_for(arch_list: tuple[str, ...], capability: tuple[int, int]) -> bool:
    """Does a build with these architectures run on a card of this compute capability?

    CUDA's compatibility rule: sm_XY code runs on cards X.Z with Z >= Y (the same major version); compute_XY (PTX)
    is compiled by the driver for any card X.Y or newer.
    """
    for arch in arch_list:
        found = re.fullmatch(r"(sm|compute)_(\d+)(\d)[a-z]?", arch)
        if not found:
            continue
        built_for = (int(found[2]), int(found[3]))
        if found[1] == "sm" and built_for[0] == capability[0] and built_for[1] <= capability[1]:
            return True
        if found[1] == "compute" and built_for <= capability:
            return True
    return False


def choose_cuda_build(nvidia: NvidiaReport) -> tuple[CudaBuild | None, str | None]:
    """The build to install, and a sentence for the user when the driver or the card stands in its way.

    The build must have kernels for every card; of those, the newest whose CUDA major version the driver supports
    (CUDA's minor version compatibility lets a 12.6 build run on any 12.x driver). When the driver supports none, the
    build that asks the smallest driver update is named together with that update.
    """
    known = {gpu.name: gpu.capability for gpu in nvidia.gpus if gpu.capability is not None}
    fitting = [build for build in CUDA_BUILDS
               if all(has_kernels_for(build.arch_list, capability) for capability in known.values())]
    if not fitting:
        names = ", ".join(f"{name} (compute capability {_dotted(capability)})" for name, capability in known.items())
        return None, (f"No PyTorch CUDA build has kernels for the {names}, so training will use the CPU; "
                      "a newer NVIDIA card is needed to train on the GPU.")
    runnable = [build for build in fitting if nvidia.driver_cuda is None or nvidia.driver_cuda[0] >= build.cuda[0]]
    if runnable:
        return runnable[0], None
    build = fitting[-1]
    return build, (f"The NVIDIA driver supports CUDA {_dotted(nvidia.driver_cuda)}, but PyTorch needs CUDA "
                   f"{build.cuda[0]} or newer for the {nvidia.gpus[0].name}: update the driver from "
                   "https://www.nvidia.com/drivers (until then training uses the CPU).")


def _dotted(version: tuple[int, int] | None) -> str:
    return "?" if version is None else f"{version[0]}.{version[1]}"


# --- can the installed PyTorch use the GPU ------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchBuild:
    """The installed PyTorch, as the pre-flight report needs it."""

    version: str  # torch.__version__, e.g. "2.13.0+cpu"
    cuda: str | None  # torch.version.cuda: None for a CPU build
    arch_list: tuple[str, ...]  # torch.cuda.get_arch_list(): the cards it has kernels for
    sees_gpu: bool  # torch.cuda.is_available()


def installed_torch() -> TorchBuild:
    """Import torch and describe it (seconds; called only when nvidia-smi has found a GPU)."""
    import torch

    sees_gpu = torch.cuda.is_available()
    return TorchBuild(torch.__version__, torch.version.cuda, tuple(torch.cuda.get_arch_list()) if sees_gpu else (),
                      sees_gpu)


def gpu_warning(nvidia: NvidiaReport, torch_build: TorchBuild, python: str) -> str | None:
    """The warning for a GPU the installed PyTorch cannot use, with the command that installs the build it can."""
    if not nvidia.gpus:
        return None
    gpu = nvidia.gpus[0]
    if torch_build.cuda is None:
        problem = (f"This computer has an {gpu.name}, but the installed PyTorch {torch_build.version} is a build "
                   "without CUDA, so training would run on the CPU (hours instead of minutes).")
    elif torch_build.sees_gpu and gpu.capability and not has_kernels_for(torch_build.arch_list, gpu.capability):
        problem = (f"The installed PyTorch {torch_build.version} has no kernels for the {gpu.name} (compute "
                   f"capability {_dotted(gpu.capability)}), so training would fail on it.")
    elif not torch_build.sees_gpu:
        problem = (f"The installed PyTorch {torch_build.version} (built for CUDA {torch_build.cuda}) cannot use the "
                   f"{gpu.name}, so training would run on the CPU.")
    else:
        return None
    build, advice = choose_cuda_build(nvidia)
    if build is None:
        return f"{problem} {advice}"
    if torch_build.cuda == _dotted(build.cuda):  # the right build already: the driver is what stands in the way
        return f"{problem} {advice or 'Update the NVIDIA driver from https://www.nvidia.com/drivers.'}"
    release = torch_build.version.split("+")[0]
    command = f'"{python}" -m pip install torch=={release}+{build.name} --index-url {PYTORCH_INDEX}{build.name}'
    return " ".join(part for part in (problem, f"To fix it, run: {command}", advice) if part)


def torch_gpu_warning() -> str | None:
    """`gpu_warning` for this computer and the Python running the wizard; None without an NVIDIA GPU."""
    nvidia = read_nvidia()
    if nvidia is None or not nvidia.gpus:
        return None
    return gpu_warning(nvidia, installed_torch(), sys.executable)


def main() -> int:
    """For run_popup.bat: print the CUDA build to install (e.g. cu130), or exit 1 when no NVIDIA GPU can use one."""
    nvidia = read_nvidia()
    if nvidia is None or not nvidia.gpus:
        return 1
    build, advice = choose_cuda_build(nvidia)
    if advice:
        print(advice, file=sys.stderr)
    if build is None:
        return 1
    print(build.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
