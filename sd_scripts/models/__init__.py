"""Base models: loading SD1.x/SD2.x/SDXL (single files and diffusers folders), family detection, LDM export, and
text encoding with clip_skip and long prompts.

The names below are imported on first use, so that `sd_scripts.models.checkpoint_header` (the family rules, which
the wizard reads before anything heavy) can be imported without torch, diffusers or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "SD_V1": "checkpoint_header",
    "SD_V2": "checkpoint_header",
    "SD_V2_V": "checkpoint_header",
    "SDXL": "checkpoint_header",
    "ModelFamily": "checkpoint_header",
    "read_model_family": "checkpoint_header",
    "BaseModel": "base_model",
    "detect_model_version": "family",
    "save_ldm_checkpoint": "ldm_export",
    "load_base_model": "loading",
    "load_vae": "loading",
    "model_from_shipped_configs": "loading",
    "encode_tokens": "text_encoding",
    "tokenize": "text_encoding",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
