"""Reading a single checkpoint file (`.safetensors`, `.ckpt`, `.pt`, `.bin`) safely, with one-sentence errors.

`.ckpt` files are pickles: they are read only with `torch.load(weights_only=True)`, which refuses any pickle that
would build objects other than tensors and plain containers, so a malicious file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from sd_scripts.errors import UserFacingError
from sd_scripts.models.checkpoint_header import PICKLE_SUFFIXES


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a checkpoint file and its safetensors metadata (empty for pickles)."""
    if not path.is_file():
        raise UserFacingError(f"The model file {path} does not exist; check the path and choose the file again.")
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return _read_pickle(path), {}
    raise UserFacingError(
        f"{path.name} is not a model file this trainer can read; choose a .safetensors or .ckpt Stable Diffusion model."
    )


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise UserFacingError(
            f"{path.name} is damaged or incomplete (it could not be read as safetensors); download it again."
        ) from error
    return tensors, metadata


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserFacingError(
            f"{path.name} contains code, not only weights, and was not opened for your safety; "
            "use a .safetensors version of this model instead."
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise UserFacingError(f"{path.name} is damaged or incomplete; download it again.") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise UserFacingError(f"{path.name} does not hold model weights; choose a Stable Diffusion checkpoint.")
    return {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
