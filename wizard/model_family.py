"""Which family the chosen base model is (SD 1.x, SD 2.x, SDXL; eps or v-prediction), read from its file's header.

The questions ask only what the file does not say, and the defaults that depend on the family (SDXL's 1024 px, U-Net
only, cached text-encoder outputs, gradient checkpointing) follow it. The file is read by the trainer's own torch-free
reader (`sd_scripts.models.checkpoint_header.read_model_family`), once per file version: a header read is cheap, but
the questions' predicates and the summary ask often.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from sd_scripts.errors import UserFacingError
from sd_scripts.models.checkpoint_header import NOT_A_BASE_MODEL, SD_V2, SD_V2_V, ModelFamily, read_model_family

# The files the base model question refuses at once: models of another kind. A file that only cannot be read here
# (damaged, or missing parts) is left to the loader, which says what is wrong when training starts.
OTHER_KINDS = tuple(NOT_A_BASE_MODEL[kind] for kind in ("lora", "refiner", "flux", "sd3"))


def read_family(path: str | None) -> ModelFamily | None:
    """The family of the model file at `path`; None when no file is chosen yet or it does not exist.

    Raises UserFacingError (one sentence) for a file that is no base model the trainer takes: a LoRA, an SDXL
    refiner, another family, an unreadable file.
    """
    if not path or not Path(path).is_file():
        return None
    stat = os.stat(path)
    return _read_cached(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _read_cached(path: str, mtime_ns: int, size: int) -> ModelFamily:
    return read_model_family(path)


def found_family(path: str | None) -> ModelFamily | None:
    """`read_family`, or None where the file does not tell (the base model question refuses models of another kind;
    a .ckpt's family is known only once it loads)."""
    try:
        family = read_family(path)
    except UserFacingError:
        return None
    return family if family is not None and family.version is not None else None


def other_kind_of_model(path: str | None) -> str | None:
    """The sentence that refuses this file as a base model when it is a model of another kind (a LoRA, an SDXL
    refiner, FLUX, SD3), else None."""
    try:
        read_family(path)
    except UserFacingError as problem:
        return str(problem) if str(problem) in OTHER_KINDS else None
    return None


def is_sdxl(family: ModelFamily | None) -> bool:
    return family is not None and family.is_sdxl


def is_sd2(family: ModelFamily | None) -> bool:
    return family is not None and family.version in (SD_V2, SD_V2_V)
