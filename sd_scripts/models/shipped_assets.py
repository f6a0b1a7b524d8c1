"""The files shipped in `assets/` so that loading never needs a model hub.

- `configs/<version>/`: the diffusers configs (unet, vae, text_encoder, scheduler) of SD1.5, SD2 512 (epsilon) and
  SD2 768-v, laid out as a diffusers model folder without weights. They are the templates the single-file loader fills
  in from tensor shapes, and a valid `config=` folder for diffusers' own `from_single_file`.
- `clip_tokenizer/`: CLIP's BPE (`vocab.json`, `merges.txt`, rebuilt by tools/build_clip_tokenizer.py) and one small
  tokenizer config per family (SD2 pads with "!", id 0, as `stabilityai/stable-diffusion-2` does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
CLIP_TOKENIZER_DIR = ASSETS_DIR / "clip_tokenizer"


def config_folder(version: str) -> Path:
    """The diffusers-style config folder of a family: "sd_v1", "sd_v2" or "sd_v2_v"."""
    return ASSETS_DIR / "configs" / version


def component_config(version: str, component: str) -> dict[str, Any]:
    """One component's config as a dict: component is "unet", "vae", "text_encoder" or "scheduler"."""
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((config_folder(version) / component / name).read_text(encoding="utf-8"))


def tokenizer_settings(v2: bool) -> dict[str, Any]:
    """The special tokens and length of the SD1 or SD2 tokenizer."""
    name = "sd_v2_tokenizer_config.json" if v2 else "sd_v1_tokenizer_config.json"
    return json.loads((CLIP_TOKENIZER_DIR / name).read_text(encoding="utf-8"))
