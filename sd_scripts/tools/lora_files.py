"""Reading LoRA files one module at a time, telling the user plainly when a file is not what a tool needs, and
the output rules every tool shares (new files only, atomic writes through `save_lora`).

A `.safetensors` file is opened memory-mapped and each tensor is read when its module is processed, so a 2 GB LoRA
costs the memory of one module, not of the file; `.ckpt`/`.pt` LoRAs are pickles and are read whole (safely).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from sd_scripts.errors import UserFacingError
from sd_scripts.untrusted import shown
from sd_scripts.networks.file_kinds import LYCORIS_ONLY_SUFFIXES, describe_keys, file_lycoris_algo
from sd_scripts.networks.file_kinds import KOHYA_PREFIXES, file_network_module, read_file_keys
from sd_scripts.saving.lora_file import load_lora_file

DOWN_SUFFIX = ".lora_down.weight"
UP_SUFFIX = ".lora_up.weight"
ALGO_WORDS = {"loha": "a LoHa", "lokr": "a LoKr", "ia3": "an IA3", "locon": "a LyCORIS file with Tucker or DoRA "
                                                                        "layers"}


@dataclass(frozen=True)
class LoraModule:
    """One module of a kohya LoRA file: its name, factors and alpha (the rank when the file has none)."""

    name: str
    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoraReader:
    """The modules of a kohya LoRA/LoCon file, read one by one. Use as a context manager."""

    def __init__(self, path: str | Path, *, what: str = "this tool") -> None:
        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        if self.path.suffix.lower() == ".safetensors":
            if not self.path.is_file():
                raise UserFacingError(f"The LoRA file {self.path} does not exist; check the path and try again.")
            try:
                handle = self._stack.enter_context(safe_open(str(self.path), framework="pt", device="cpu"))
            except (SafetensorError, OSError) as error:
                raise UserFacingError(f"{self.path.name} is not a readable .safetensors file ({error}); "
                                      "it may be damaged or incomplete.") from None
            self.keys = list(handle.keys())
            self.metadata = dict(handle.metadata() or {})
            self._get = handle.get_tensor
        else:
            tensors, self.metadata = load_lora_file(self.path)
            self.keys = list(tensors)
            self._get = tensors.__getitem__
        require_kohya_lora(self.path, self.keys, what=what)
        self.names = [key.removesuffix(DOWN_SUFFIX) for key in self.keys if key.endswith(DOWN_SUFFIX)]
        self._keys = set(self.keys)

    def __enter__(self) -> LoraReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def has(self, name: str) -> bool:
        return f"{name}{DOWN_SUFFIX}" in self._keys

    def module(self, name: str) -> LoraModule:
        down = self._get(f"{name}{DOWN_SUFFIX}").float()
        up = self._get(f"{name}{UP_SUFFIX}").float()
        alpha_key = f"{name}.alpha"
        alpha = float(self._get(alpha_key).float().reshape(())) if alpha_key in self._keys else float(down.shape[0])
        return LoraModule(name, down, up, alpha)

    def modules(self) -> Iterator[LoraModule]:
        for name in self.names:
            yield self.module(name)


def require_kohya_lora(path: Path, keys: list[str], *, what: str) -> None:
    """Refuse, in one sentence, a file that is not a kohya LoRA/LoCon (a LoHa, a checkpoint, foreign keys)."""
    kohya_keys = [key for key in keys if key.startswith(KOHYA_PREFIXES)]
    if any(key.split(".", 1)[-1] in LYCORIS_ONLY_SUFFIXES for key in kohya_keys):
        kind = ALGO_WORDS[file_lycoris_algo(keys)]
        raise UserFacingError(f"{path.name} is {kind}, which {what} cannot read: it works on LoRA and LoCon files "
                              "(lora_down/lora_up); choose one of those.")
    down_keys = [key for key in keys if key.endswith(DOWN_SUFFIX)]
    if not down_keys or not all(key.startswith(KOHYA_PREFIXES) for key in down_keys):
        raise UserFacingError(f"{path.name} is not a LoRA {what} can read: {describe_keys(keys)}; "
                              "choose a LoRA or LoCon file made by sd-scripts or this trainer.")
    missing = [key for key in down_keys if key.removesuffix(DOWN_SUFFIX) + UP_SUFFIX not in keys]
    if missing:
        raise UserFacingError(f"{path.name} has a lora_down without its lora_up ({shown(missing[0])}); the file is "
                              "damaged, choose another.")


def new_output(path: str | Path, suffixes: tuple[str, ...] = (".safetensors",)) -> Path:
    """`path` as an output: it must not exist yet (a user's file is never replaced) and have one of `suffixes`."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise UserFacingError(f"The output {path.name} must end in {' or '.join(suffixes)}; change its name.")
    if path.exists():
        raise UserFacingError(f"{path} already exists; choose another output name or move the old file away first.")
    return path


def network_file_header(path: str | Path) -> tuple[list[str], dict[str, str]]:
    """The tensor names and metadata of a LoRA or LyCORIS file (a .safetensors header only; a .ckpt read whole)."""
    path = Path(path)
    if not path.is_file():
        raise UserFacingError(f"The file {path} does not exist; check the path and try again.")
    if path.suffix.lower() == ".safetensors":
        return read_file_keys(path)
    tensors, metadata = load_lora_file(path)
    return list(tensors), metadata


def require_network_file(path: str | Path) -> tuple[list[str], dict[str, str]]:
    """The tensor names and metadata of a LoRA or LyCORIS file, after refusing in one sentence a file that is
    neither."""
    keys, metadata = network_file_header(path)
    try:
        file_network_module(keys, metadata)
    except UserFacingError:
        raise UserFacingError(f"{Path(path).name} is not a LoRA or LyCORIS file: {describe_keys(keys)}; choose one "
                              "made for Stable Diffusion 1.x, 2.x or SDXL.") from None
    return keys, metadata


def module_names_in_file(path: str | Path) -> set[str]:
    """The layer names (the part before the first '.') of a LoRA or LyCORIS file's tensors."""
    keys, _ = network_file_header(path)
    return {key.split(".", 1)[0] for key in keys}
