"""Reading and writing LoRA files in the three formats sd-scripts offers.

`.safetensors` carries the metadata (plus the `sshs_*` hashes sd-scripts adds); `.ckpt` and `.pt` are a plain
`torch.save` of the state dict, without metadata, as in sd-scripts. Reading never runs code from the file:
safetensors is data only and `torch.load` is called with `weights_only=True`.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from sd_scripts.args import SAVE_FORMATS, SAVE_PRECISIONS
from sd_scripts.errors import UserFacingError
from sd_scripts.saving.atomic import unwritable_error, write_atomically
from sd_scripts.saving.hashes import safetensors_hashes

SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def save_lora(
    state_dict: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    save_model_as: str = "safetensors",
    save_precision: str | None = None,
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a LoRA atomically with mode 0644 and return its path.

    `save_precision` None keeps each tensor's dtype; otherwise every floating tensor, alpha included, is cast.
    An existing file is only replaced when `overwrite` is True (the trainer's own intermediate saves);
    a user's file is never replaced silently.
    """
    path = Path(path)
    if save_model_as not in SAVE_FORMATS:
        raise UserFacingError(f"'{save_model_as}' is not a LoRA file format; choose one of {', '.join(SAVE_FORMATS)}.")
    if save_precision is not None and save_precision not in SAVE_PRECISIONS:
        raise UserFacingError(
            f"'{save_precision}' is not a save precision; choose one of {', '.join(SAVE_PRECISIONS)} or leave it empty."
        )
    if path.exists() and not overwrite:
        raise UserFacingError(f"{path} already exists; choose another output name or move the old file away first.")

    tensors = tensors_for_saving(state_dict, save_precision)
    if save_model_as == "safetensors":
        full_metadata = dict(metadata or {})
        full_metadata.update(safetensors_hashes(tensors, full_metadata))
        data = safetensors_bytes(tensors, full_metadata)
    else:
        data = torch_bytes(tensors)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda temporary: temporary.write_bytes(data))
    except OSError as error:
        raise unwritable_error(path, error) from None
    return path


def torch_bytes(value: object) -> bytes:
    """`torch.save` into memory: written by Python, a failed write (a full disk) raises an OSError that says so,
    where torch's and safetensors' own file writers report it as an error of their format."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def tensors_for_saving(state_dict: Mapping[str, torch.Tensor], save_precision: str | None) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies, cast to the save precision (integer tensors keep their type)."""
    dtype = SAVE_DTYPES[save_precision] if save_precision else None
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[key] = tensor.contiguous()
    return tensors


def load_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of a LoRA file; `.ckpt` / `.pt` / `.pth` files have no metadata."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"The LoRA file {path} does not exist; check the path and try again.")
    if path.suffix.lower() == ".safetensors":
        try:
            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError) as error:
            raise UserFacingError(
                f"{path} is not a readable safetensors file ({error}); it may be damaged or incomplete."
            ) from None
        return tensors, metadata
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused what the pickle names: code, not weights
        raise UserFacingError(f"{path.name} contains code, not only weights, and was not opened for your safety; "
                              "use a .safetensors version of this LoRA instead.") from None
    except (RuntimeError, EOFError, OSError):
        raise UserFacingError(
            f"{path} is not a readable LoRA checkpoint (damaged or incomplete); use a .safetensors LoRA or a plain "
            "state-dict .ckpt."
        ) from None
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise UserFacingError(f"{path} does not hold a plain LoRA state dict; use a .safetensors LoRA instead.")
    return loaded, {}
