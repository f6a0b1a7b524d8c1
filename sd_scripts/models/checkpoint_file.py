"""Reading a single checkpoint file (`.safetensors`, `.ckpt`, `.pt`, `.bin`) safely, with one-sentence errors.

`.ckpt` files are pickles: they are read only with `torch.load(weights_only=True)`, which refuses any pickle that
would build objects other than tensors and plain containers, so a malicious file cannot run code.

The tensors come as a `CheckpointTensors` mapping that reads each tensor only when it is asked for and casts it, as
it is read, to the dtype its part will train in. A `.safetensors` file with tensors to cast (an fp16 file for a
float32 run, an fp32 or fp16 file for a bf16 run) is read tensor by tensor with pread, so the peak while loading is the model in
its training dtype plus one tensor; a memory-mapped read would keep every page of the file resident beside the cast
copies (sd-scripts loads in float32 and casts after, holding both). A file already in the training dtype is memory-
mapped: its tensors are then the file's own pages, read only when used and never copied.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from sd_scripts.errors import UserFacingError
from sd_scripts.models.checkpoint_header import PICKLE_SUFFIXES

DtypeFor = Callable[[str], torch.dtype]  # the dtype a tensor of this name trains in
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def float32_for_all(key: str) -> torch.dtype:
    """sd-scripts loads every weight in float32, whatever the file holds."""
    return torch.float32


class CheckpointTensors(Mapping[str, torch.Tensor]):
    """A checkpoint's tensors by name: shapes known up front, floating-point tensors cast to `dtype_for(name)` when
    read. Integer tensors (position ids, step counters) are returned as stored."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], read: Callable[[str], torch.Tensor],
                 dtype_for: DtypeFor = float32_for_all) -> None:
        self.shapes = dict(shapes)
        self._read = read
        self._dtype_for = dtype_for

    @classmethod
    def of(cls, tensors: Mapping[str, torch.Tensor], dtype_for: DtypeFor = float32_for_all) -> CheckpointTensors:
        """Tensors already in memory (a pickle, a converted state dict)."""
        return cls({key: tuple(tensor.shape) for key, tensor in tensors.items()}, tensors.__getitem__, dtype_for)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.shapes:
            raise KeyError(key)
        tensor = self._read(key)
        if not tensor.is_floating_point():
            return tensor
        return tensor.to(self._dtype_for(key)).contiguous()

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def under(self, prefix: str) -> CheckpointTensors:
        """The tensors whose names start with `prefix`, named without it (still read only when asked for)."""
        return CheckpointTensors(
            {key[len(prefix):]: shape for key, shape in self.shapes.items() if key.startswith(prefix)},
            lambda key: self._read(prefix + key),
            lambda key: self._dtype_for(prefix + key),
        )

    def without(self, excluded: Callable[[str], bool]) -> CheckpointTensors:
        """The tensors whose names `excluded` does not pick (a layer a model drops, for instance)."""
        return CheckpointTensors({key: shape for key, shape in self.shapes.items() if not excluded(key)},
                                 self._read, self._dtype_for)


def read_checkpoint(path: Path, dtype_for: DtypeFor = float32_for_all) -> tuple[CheckpointTensors, dict[str, str]]:
    """The tensors of a checkpoint file, each cast to `dtype_for(name)` as it is read, and its safetensors metadata
    (empty for pickles)."""
    if not path.is_file():
        raise UserFacingError(f"The model file {path} does not exist; check the path and choose the file again.")
    if path.suffix.lower() == ".safetensors":
        return _open_safetensors(path, dtype_for)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return CheckpointTensors.of(_read_pickle(path), dtype_for), {}
    raise UserFacingError(
        f"{path.name} is not a model file this trainer can read; choose a .safetensors or .ckpt Stable Diffusion model."
    )


def _open_safetensors(path: Path, dtype_for: DtypeFor) -> tuple[CheckpointTensors, dict[str, str]]:
    damaged = f"{path.name} is damaged or incomplete (it could not be read as safetensors); download it again."
    try:
        mapped = safe_open(str(path), framework="pt", device="cpu")
        metadata = mapped.metadata() or {}
        stored = {key: mapped.get_slice(key) for key in mapped.keys()}
        shapes = {key: tuple(part.get_shape()) for key, part in stored.items()}
        casts = any(SAFETENSORS_DTYPES.get(part.get_dtype(), dtype_for(key)) != dtype_for(key)
                    for key, part in stored.items())
        handle = safe_open(str(path), framework="pt", device="cpu", backend="pread") if casts else mapped
    except (SafetensorError, OSError, ValueError) as error:
        raise UserFacingError(damaged) from error

    def read(key: str) -> torch.Tensor:
        try:
            return handle.get_tensor(key)
        except (SafetensorError, OSError, ValueError) as error:
            raise UserFacingError(damaged) from error

    return CheckpointTensors(shapes, read, dtype_for), metadata


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
