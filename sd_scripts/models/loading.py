"""`load_base_model`: a single-file SD1/SD2/SDXL checkpoint or a diffusers folder, as diffusers modules, offline.

The file decides the family; when the user's v2 / v_parameterization answers disagree with it, the file wins and
a sentence in `BaseModel.notes` says so (family rules: checkpoint_header.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from sd_scripts.errors import UserFacingError
from sd_scripts.models.base_model import SD_V1, SD_V2, SD_V2_V, SDXL, BaseModel
from sd_scripts.models.checkpoint_file import CheckpointTensors, read_checkpoint
from sd_scripts.models.checkpoint_header import family_from_keys, read_model_family
from sd_scripts.models.diffusers_folder import load_diffusers_folder
from sd_scripts.models.family import unet_predicts_velocity
from sd_scripts.models.ldm_layout import VAE_PREFIX, vae_to_ldm
from sd_scripts.models.matmul_convolution import use_matmul_convolutions
from sd_scripts.models.shipped_assets import component_config
from sd_scripts.models.single_file import text_encoder_2_from_ldm, text_encoder_from_ldm, unet_from_ldm, vae_from_ldm
from sd_scripts.models.tokenizers import load_sdxl_tokenizers, load_tokenizer


def load_base_model(
    path: str | os.PathLike,
    *,
    v2: bool | None = None,
    v_parameterization: bool | None = None,
    vae: str | os.PathLike | None = None,
    tokenizer_cache_dir: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype = torch.float32,
) -> BaseModel:
    """Load the base model. `v2` / `v_parameterization` are the user's answers (None: not given); `vae` replaces
    the model's VAE (LDM or diffusers file, or diffusers folder). The U-Net and text encoders come in `dtype`, the VAE
    in `vae_dtype`, each weight cast as it is read (a half-precision run never holds the model in float32)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserFacingError(f"The base model {path} does not exist; check the path and choose the model again.")
    text_encoder_2 = None
    if path.is_dir():
        family = read_model_family(path)
        unet, model_vae, text_encoder, text_encoder_2 = load_diffusers_folder(path, sdxl=family.is_sdxl, dtype=dtype,
                                                                              vae_dtype=vae_dtype)
    else:
        checkpoint, metadata = read_checkpoint(path, lambda key: vae_dtype if key.startswith(VAE_PREFIX) else dtype)
        family = family_from_keys(checkpoint, metadata)
        unet = unet_from_ldm(checkpoint, family.version)
        text_encoder = text_encoder_from_ldm(checkpoint, family.version)
        if family.is_sdxl:
            text_encoder_2 = text_encoder_2_from_ldm(checkpoint)
        has_vae = any(key.startswith(VAE_PREFIX) for key in checkpoint)
        if not has_vae and vae is None:
            raise UserFacingError(f"{path.name} has no VAE inside; choose a separate VAE file as well.")
        model_vae = vae_from_ldm(checkpoint, version=family.version) if has_vae and vae is None else None
        del checkpoint
    use_matmul_convolutions(unet)  # faster on a CPU at the lowest resolutions; the same weights and results
    file_v2 = family.version in (SD_V2, SD_V2_V)
    if vae is not None:
        model_vae = load_vae(vae, vae_dtype)
    # sd-scripts scales latents by its family's constant whatever VAE it is given (SDXL 0.13025, else 0.18215)
    family_vae = SDXL if family.is_sdxl else SD_V1
    model_vae.register_to_config(scaling_factor=component_config(family_vae, "vae")["scaling_factor"])

    notes: list[str] = []
    if v2 is not None and v2 != file_v2:
        short = "SDXL" if family.is_sdxl else "SD1"
        notes.append(
            "This file is an SD2 model although v2 was not set: using v2."
            if file_v2
            else f"This file is an {short} model although v2 was set: training it as {short}."
        )
    stated_v = family.v_prediction
    if stated_v is None and file_v2:
        stated_v = unet_predicts_velocity(unet)
    if stated_v is None:  # an SD1 or SDXL file that does not say: follow the user, as sd-scripts does
        v_pred = bool(v_parameterization)
    else:
        v_pred = stated_v
        if v_parameterization is not None and v_parameterization != v_pred:
            notes.append(
                "This model predicts velocity (v-prediction) although v_parameterization was not set: using v-prediction."
                if v_pred
                else "This model predicts noise (epsilon), so v_parameterization was turned off."
            )
    if family.is_sdxl:
        tokenizer, tokenizer_2 = load_sdxl_tokenizers(tokenizer_cache_dir)
        version = SDXL
    else:
        tokenizer, tokenizer_2 = load_tokenizer(file_v2, tokenizer_cache_dir), None
        version = (SD_V2_V if v_pred else SD_V2) if file_v2 else SD_V1
    return BaseModel(
        unet=unet,
        vae=model_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        version=version,
        v2=file_v2,
        v_parameterization=v_pred,
        path=str(path),
        notes=notes,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )


def load_vae(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """A replacement VAE in `dtype`: a diffusers folder (or a model folder with `vae/`), or a file in LDM names (with
    or without `first_stage_model.`) or diffusers names."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserFacingError(f"The VAE {path} does not exist; check the path and choose the VAE again.")
    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        if not (folder / "config.json").is_file():
            raise UserFacingError(f"The folder {path} is not a diffusers VAE (it has no config.json); choose a VAE file or folder.")
        try:
            return AutoencoderKL.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
        except (OSError, ValueError) as error:
            raise UserFacingError(f"The VAE folder {path} is missing its weights or they are damaged; copy it again.") from error
    tensors, _ = read_checkpoint(path, lambda key: dtype)
    if any(key.startswith(VAE_PREFIX) for key in tensors):
        return vae_from_ldm(tensors)
    if "encoder.down.0.block.0.conv1.weight" in tensors:
        return vae_from_ldm(tensors, prefix="")
    if "encoder.down_blocks.0.resnets.0.conv1.weight" in tensors:
        num_blocks = len({key.split(".")[2] for key in tensors if key.startswith("encoder.down_blocks.")})
        return vae_from_ldm(CheckpointTensors.of(vae_to_ldm(tensors, num_blocks, prefix=""), lambda key: dtype), prefix="")
    raise UserFacingError(f"{path.name} is not a VAE; choose a Stable Diffusion VAE file (.safetensors or .ckpt).")


def model_from_shipped_configs(version: str) -> BaseModel:
    """A model of the family `version` (SD_V1, SD_V2, SD_V2_V or SDXL) with random weights, built from the shipped
    configs: for benchmarks where no checkpoint is at hand, or, under accelerate's init_empty_weights, for real shapes
    only."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    sdxl, v2 = version == SDXL, version in (SD_V2, SD_V2_V)
    tokenizer, tokenizer_2 = load_sdxl_tokenizers() if sdxl else (load_tokenizer(v2), None)
    return BaseModel(
        unet=UNet2DConditionModel.from_config(component_config(version, "unet")),
        vae=AutoencoderKL.from_config(component_config(version, "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig(**component_config(version, "text_encoder"))),
        tokenizer=tokenizer,
        version=version,
        v2=v2,
        v_parameterization=version == SD_V2_V,
        path="",
        text_encoder_2=(CLIPTextModelWithProjection(CLIPTextConfig(**component_config(version, "text_encoder_2")))
                        if sdxl else None),
        tokenizer_2=tokenizer_2,
    )
