"""Turning what went wrong into one sentence and a hint a non-programmer can act on."""

from __future__ import annotations

import datetime
import os
import tempfile
import traceback
from pathlib import Path

import torch

from sd_scripts.errors import UserFacingError

OUT_OF_MEMORY_ADVICE = (
    "Lower the batch size or the resolution, turn on gradient checkpointing and latent caching, "
    "or use an 8-bit optimizer such as AdamW8bit."
)
NAN_LOSS_ADVICE = "Lower the learning rate, or use bf16 instead of fp16 mixed precision."
# SDXL's original VAE overflows in fp16 (NaN latents, so a NaN loss at once); sd-scripts' remedy is no_half_vae.
SDXL_FP16_VAE_ADVICE = "SDXL's VAE overflows in fp16: turn on no_half_vae, or use an fp16-fix VAE, or bf16."


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def out_of_memory_error(device: str) -> UserFacingError:
    where = "the graphics card (VRAM)" if device.startswith("cuda") else "the computer (RAM)"
    return UserFacingError(f"The training ran out of memory on {where}.", OUT_OF_MEMORY_ADVICE)


def nan_loss_error(step: int, fp16_sdxl_vae: bool = False) -> UserFacingError:
    return UserFacingError(f"The loss became NaN (not a number) at step {step}, so the LoRA stopped learning.",
                           SDXL_FP16_VAE_ADVICE if fp16_sdxl_vae else NAN_LOSS_ADVICE)


def write_bug_report(exc: BaseException, output_dir: str | None) -> Path | None:
    """Write the traceback to a log file (in output_dir if it can, else the temp folder); None if nowhere works."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = "".join(traceback.format_exception(exc))
    for folder in (output_dir, tempfile.gettempdir()):
        if not folder:
            continue
        try:
            os.makedirs(folder, exist_ok=True)
            path = Path(folder) / f"training-error-{stamp}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None
