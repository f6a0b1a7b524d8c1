"""Loading a diffusers model folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`, and for SDXL
`text_encoder_2/`), strictly offline. Tokenizer folders are not needed: the tokenizers are shipped (tokenizers.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from sd_scripts.errors import UserFacingError
from sd_scripts.models.base_model import BaseModel
from sd_scripts.models.shipped_assets import config_folder


def weights_variant(part: Path) -> str | None:
    """"fp16" when a part only has `*.fp16.*` weight files (a common way diffusers folders are shared)."""
    names = [p.name for p in part.iterdir() if p.suffix in (".safetensors", ".bin")]
    if names and all(".fp16." in name for name in names):
        return "fp16"
    return None


def load_diffusers_folder(
    folder: Path, sdxl: bool, dtype: torch.dtype = torch.float32, vae_dtype: torch.dtype = torch.float32
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTextModelWithProjection | None]:
    """The U-Net and text encoder(s) in `dtype`, the VAE in `vae_dtype`; the second text encoder only for `sdxl`."""
    parts = ("unet", "vae", "text_encoder", "text_encoder_2") if sdxl else ("unet", "vae", "text_encoder")
    for part in parts:
        if not (folder / part / "config.json").is_file():
            raise UserFacingError(f"The diffusers model folder {folder} has no complete '{part}' part; copy or download the whole model folder again.")
    try:
        unet = UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", local_files_only=True, torch_dtype=dtype, variant=weights_variant(folder / "unet")
        )
        vae = AutoencoderKL.from_pretrained(
            folder, subfolder="vae", local_files_only=True, torch_dtype=vae_dtype, variant=weights_variant(folder / "vae")
        )
        text_encoder = CLIPTextModel.from_pretrained(
            folder / "text_encoder", local_files_only=True, dtype=dtype, variant=weights_variant(folder / "text_encoder")
        )
        text_encoder_2 = None
        if sdxl:
            text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
                folder / "text_encoder_2", local_files_only=True, dtype=dtype, variant=weights_variant(folder / "text_encoder_2")
            )
    except (OSError, ValueError) as error:
        raise UserFacingError(f"The diffusers model folder {folder} is missing weight files or they are damaged; copy or download the whole model folder again.") from error
    return unet, vae, text_encoder, text_encoder_2


def save_diffusers_folder(model: BaseModel, folder: Path) -> None:
    """Write the model as a diffusers folder that diffusers' own pipelines load: every part with `save_pretrained`,
    the family's shipped model_index.json and scheduler config (stating v-prediction when the model uses it)."""
    folder.mkdir(parents=True, exist_ok=True)
    template = config_folder(model.version)
    shutil.copyfile(template / "model_index.json", folder / "model_index.json")
    scheduler = json.loads((template / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    scheduler["prediction_type"] = "v_prediction" if model.v_parameterization else "epsilon"
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2) + "\n", encoding="utf-8")
    parts = {"unet": model.unet, "vae": model.vae, "text_encoder": model.text_encoder, "tokenizer": model.tokenizer}
    if model.is_sdxl:
        parts |= {"text_encoder_2": model.text_encoder_2, "tokenizer_2": model.tokenizer_2}
    for name, part in parts.items():
        part.save_pretrained(folder / name)
