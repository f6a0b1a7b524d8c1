"""Loading a diffusers model folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`), strictly offline."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from sd_scripts.errors import UserFacingError


def weights_variant(part: Path) -> str | None:
    """"fp16" when a part only has `*.fp16.*` weight files (a common way diffusers folders are shared)."""
    names = [p.name for p in part.iterdir() if p.suffix in (".safetensors", ".bin")]
    if names and all(".fp16." in name for name in names):
        return "fp16"
    return None


def load_diffusers_folder(folder: Path) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    if not (folder / "model_index.json").is_file():
        raise UserFacingError(
            f"The folder {folder} is not a diffusers model (it has no model_index.json); choose a model file or a diffusers model folder."
        )
    for part in ("unet", "vae", "text_encoder"):
        if not (folder / part / "config.json").is_file():
            raise UserFacingError(f"The diffusers model folder {folder} has no complete '{part}' part; copy or download the whole model folder again.")
    try:
        unet = UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", local_files_only=True, torch_dtype=torch.float32, variant=weights_variant(folder / "unet")
        )
        vae = AutoencoderKL.from_pretrained(
            folder, subfolder="vae", local_files_only=True, torch_dtype=torch.float32, variant=weights_variant(folder / "vae")
        )
        text_encoder = CLIPTextModel.from_pretrained(
            folder / "text_encoder", local_files_only=True, dtype=torch.float32, variant=weights_variant(folder / "text_encoder")
        )
    except (OSError, ValueError) as error:
        raise UserFacingError(f"The diffusers model folder {folder} is missing weight files or they are damaged; copy or download the whole model folder again.") from error
    return unet, vae, text_encoder


def folder_is_sd2(folder: Path) -> bool:
    """SD2's text encoder is OpenCLIP converted to CLIP, with GELU; OpenAI CLIP (SD1) uses QuickGELU."""
    config = json.loads((folder / "text_encoder" / "config.json").read_text(encoding="utf-8"))
    return config.get("hidden_act") == "gelu"


def folder_states_v_prediction(folder: Path) -> bool | None:
    """The scheduler config's prediction_type, when the folder has one."""
    scheduler_config = folder / "scheduler" / "scheduler_config.json"
    if not scheduler_config.is_file():
        return None
    prediction = json.loads(scheduler_config.read_text(encoding="utf-8")).get("prediction_type", "epsilon")
    return prediction == "v_prediction"
