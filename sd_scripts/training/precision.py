"""Where and in which precision the training runs, how the frozen base model saves memory, and which attention
kernel the U-Net uses.

accelerate owns the device and the mixed-precision machinery (autocast, the fp16 gradient scaler). Its state is a
process-wide singleton, and the wizard trains several times in one process, so it is reset before and after
every run.
"""

from __future__ import annotations

import importlib.util

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from diffusers.models.attention_processor import AttnProcessor2_0

from sd_scripts.cpu_features import cpu_has_native_bf16
from sd_scripts.training.processes import launched_processes, process_group_kwargs, use_cpu_processes

WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def network_cast_dtype(precision: str, *, compiled: bool) -> torch.dtype | None:
    """What a step casts the network's weights to once (networks/weight_cast.py): autocast's precision; None in fp32,
    and for a compiled U-Net, whose graph casts inside it without launches and would take each cast as an input."""
    return None if precision == "no" or compiled else WEIGHT_DTYPES[precision]


def resolve_mixed_precision(requested: str, cuda: bool, cpu_bf16: bool | None = None) -> tuple[str, list[str]]:
    """The precision that makes sense on this machine: fp16 is a GPU format, bf16 needs a recent GPU or a CPU with
    bf16 instructions (`cpu_bf16`; None: read this CPU's flags). Elsewhere oneDNN emulates bf16, slower than fp32."""
    if requested == "fp16" and not cuda:
        return "no", ["fp16 mixed precision needs an NVIDIA GPU; training in full precision (fp32) on the CPU instead."]
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        return "fp16", ["This GPU does not support bf16; training with fp16 mixed precision instead."]
    if requested == "bf16" and not cuda and not (cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16):
        return "no", ["This CPU has no bf16 instructions (AVX512-BF16 or AMX), where bf16 gains nothing over fp32; "
                      "training in full precision (fp32) instead."]
    return requested, []


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide settings so the next Accelerator may use another precision."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def create_accelerator(mixed_precision: str) -> Accelerator:
    """A fresh Accelerator; gradient accumulation is done by the loop itself so a step always means an optimizer step.

    Under `accelerate launch` it joins the process group as `sd_scripts.training.processes` sets it up.
    """
    reset_accelerate_state()
    # A lone process gets accelerate's defaults: a process-group backend given to it would make accelerate look for
    # a group that was never started.
    handlers = [process_group_kwargs()] if launched_processes() > 1 else []
    return Accelerator(mixed_precision=mixed_precision, cpu=use_cpu_processes(), kwargs_handlers=handlers)


def configure_attention(unet: torch.nn.Module, vae: torch.nn.Module, *, xformers: bool, on_cuda: bool) -> list[str]:
    """PyTorch's scaled-dot-product attention by default; xformers only where it can actually run."""
    note = None
    if xformers:
        if not on_cuda:
            note = "xformers needs an NVIDIA GPU; using PyTorch's built-in memory-efficient attention (SDPA) instead."
        elif importlib.util.find_spec("xformers") is None:
            note = "xformers is not installed; using PyTorch's built-in memory-efficient attention (SDPA) instead."
        else:
            try:
                unet.enable_xformers_memory_efficient_attention()
                vae.enable_xformers_memory_efficient_attention()
                return []
            except Exception as error:  # noqa: BLE001 - a broken xformers build must not stop the training
                note = f"xformers could not be used ({error}); using PyTorch's built-in attention (SDPA) instead."
    unet.set_attn_processor(AttnProcessor2_0())
    vae.set_attn_processor(AttnProcessor2_0())
    return [note] if note else []


def freeze_base_model(modules: tuple[torch.nn.Module, ...], device: torch.device, dtype: torch.dtype) -> None:
    """The base model is never trained: no gradients, moved to the device and cast to the training precision (a
    no-op when it was loaded in it, as the trainer loads it)."""
    for module in modules:
        module.requires_grad_(False)
        module.to(device)
        if any(parameter.dtype != dtype for parameter in module.parameters() if parameter.is_floating_point()):
            module.to(dtype=dtype)
        module.eval()


def enable_gradient_checkpointing(
    unet: torch.nn.Module, text_encoders: list[torch.nn.Module], *, text_encoder_trained: bool
) -> None:
    """Recompute activations in the backward pass instead of keeping them (sd-scripts' set-up)."""
    unet.enable_gradient_checkpointing()
    unet.train()
    if text_encoder_trained:
        for text_encoder in text_encoders:
            text_encoder.activation_checkpointing_enable()  # transformers 5 name of gradient_checkpointing_enable
            text_encoder.train()
            # Checkpointed segments need an input that requires grad to pass gradients back to the LoRA.
            # (transformers 5's CLIPTextModel holds its embeddings itself, CLIPTextModelWithProjection in text_model.)
            getattr(text_encoder, "text_model", text_encoder).embeddings.requires_grad_(True)
