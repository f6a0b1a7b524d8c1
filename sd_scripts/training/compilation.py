"""torch.compile of the U-Net for the training steps, as sd-scripts' --torch_compile and --dynamo_backend ask.

- inductor (the default) generates fused kernels for the U-Net's elementwise work around the library's convolutions
  and matrix products: Triton on an NVIDIA GPU (Linux; PyTorch for Windows ships no Triton), C++ on a CPU.
- cudagraphs records the kernels of a step once per input shape and replays them: the host no longer launches each
  of a step's thousands of operations, which is what bounds a batch-1 step on a fast GPU. It needs CUDA, not Triton.
- aot_eager and eager only trace, without generating anything: for checking that a model compiles.

Compiling happens in the first step, and again for each new bucket size (fixed-shape buckets are compiled once each),
so the first steps take minutes; it pays on long runs. The LoRA's hooks are traced with the U-Net they hook into.
Samples are drawn with the U-Net as it is (other shapes, no gradients, rarely): only the training step is compiled.
"""

from __future__ import annotations

import importlib.util

import torch

from sd_scripts.args import DYNAMO_BACKENDS
from sd_scripts.errors import UserFacingError


def check_compile_backend(backend: str, device: torch.device) -> list[str]:
    """Notes for a run that compiles with `backend` on `device`, or one sentence why it cannot (raised before the
    model is loaded)."""
    if backend not in DYNAMO_BACKENDS:
        raise UserFacingError(f"dynamo_backend is '{backend}', which is not one of {', '.join(DYNAMO_BACKENDS)}; "
                              "choose one of those.")
    if backend == "cudagraphs" and device.type != "cuda":
        raise UserFacingError("dynamo_backend cudagraphs replays CUDA graphs and needs an NVIDIA GPU; choose inductor "
                              "or turn torch_compile off.")
    if backend == "inductor" and device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise UserFacingError("torch.compile's inductor backend needs Triton on a GPU, which this installation lacks "
                              "(PyTorch for Windows has none); choose dynamo_backend cudagraphs or turn torch_compile "
                              "off.")
    notes = [f"torch.compile ({backend}): the first step, and the first of each new bucket size, compile the U-Net, "
             "which can take minutes; the steps after are faster."]
    if device.type == "cpu":
        notes.append("On a CPU compiling seldom pays: the convolutions and matrix products, most of a step, stay the "
                     "same library kernels (the README has the figures).")
    return notes


def compiled_unet(unet: torch.nn.Module, backend: str) -> torch.nn.Module:
    """The U-Net the training steps call: `unet` compiled by `backend`, sharing its parameters and hooks."""
    return torch.compile(unet, backend=backend)
