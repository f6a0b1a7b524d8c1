"""Turning what went wrong into one sentence and a hint a non-programmer can act on.

A failure during the steps (a NaN loss, running out of memory, a full disk) ends the run as a `FailedRun`: its
message says what happened, its advice first where the LoRA learned so far is kept and which state the run can
continue from, then what to change.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import traceback
from pathlib import Path

import torch

from sd_scripts.args import TrainArgs
from sd_scripts.errors import UserFacingError

NAN_LOSS_ADVICE = "Lower the learning rate, or use bf16 instead of fp16 mixed precision."
# SDXL's original VAE overflows in fp16 (NaN latents, so a NaN loss at once); sd-scripts' remedy is no_half_vae.
SDXL_FP16_VAE_ADVICE = "SDXL's VAE overflows in fp16: turn on no_half_vae, or use an fp16-fix VAE, or bf16."
GIB = 1024**3


class NonFiniteLoss(Exception):
    """A step's loss came out NaN or infinite; that step never reached the weights (stopped before the optimizer
    stepped, or skipped by it on the GPU: see loss_readback)."""

    def __init__(self, step: int) -> None:
        super().__init__(f"non-finite loss at step {step}")
        self.step = step


class FailedRun(UserFacingError):
    """A run that failed after it started stepping; `lora_path` and `resume_state` are what it leaves to go on from."""

    def __init__(self, message: str, advice: str | None, *, lora_path: Path | None, resume_state: Path | None) -> None:
        super().__init__(message, advice)
        self.lora_path = lora_path
        self.resume_state = resume_state


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def out_of_memory_error(exc: BaseException, args: TrainArgs, step: int | None = None) -> UserFacingError:
    """The sentence for an out-of-memory error, with the changes that lower the memory for these very settings."""
    on_gpu = isinstance(exc, torch.OutOfMemoryError) or "cuda" in str(exc).lower()  # CUDA's, else the RAM's
    where = "the graphics card (VRAM)" if on_gpu else "the computer (RAM)"
    when = f" at step {step}" if step else ""
    figures = ""
    if on_gpu and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB
        peak = torch.cuda.max_memory_allocated() / GIB
        figures = f" The card has {total:.1f} GB; the training had taken {peak:.1f} GB when it ran out."
    return UserFacingError(f"The training ran out of memory on {where}{when}.",
                           "To need less, in this order: " + "; ".join(memory_savings(args)) + "." + figures)


def memory_savings(args: TrainArgs) -> list[str]:
    """What lowers the memory of these settings, the changes that cost nothing in quality first (gradient
    checkpointing only costs time, cached latents only random crops and colour changes), the resolution last."""
    savings = []
    if not args.gradient_checkpointing:
        savings.append("turn on gradient checkpointing")
    if not (args.cache_latents or args.cache_latents_to_disk):
        savings.append("turn on latent caching")
    if "8bit" not in (args.optimizer_type or "").lower() and not args.use_8bit_adam:
        savings.append("use an 8-bit optimizer such as AdamW8bit")
    if args.train_batch_size > 1:
        savings.append(f"lower the batch size from {args.train_batch_size} to {args.train_batch_size // 2}")
    if args.network_dim and args.network_dim > 8:
        savings.append(f"lower the network dim from {args.network_dim} to {args.network_dim // 2}")
    longest = max(int(side) for side in (args.resolution or "512").split(","))
    if longest > 512:  # below 512 px Stable Diffusion learns little; 128 px less is about 20% fewer pixels at 1024
        savings.append(f"lower the resolution from {longest} to {longest - 128}")
    savings.append("close other programs that use the memory")
    return savings


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
