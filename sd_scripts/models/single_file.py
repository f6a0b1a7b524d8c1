"""Building the diffusers modules of a single-file LDM checkpoint with diffusers' own converters.

The configs come from the tensor shapes (architecture.py), so nothing is fetched from a hub. Modules are created
without allocating weights and take the checkpoint's tensors directly, each read and cast to its part's dtype only when
the converter asks for it (checkpoint_file.CheckpointTensors); a strict load makes any unexpected layout fail loudly
instead of training a half-random model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from sd_scripts.errors import UserFacingError
from sd_scripts.models.architecture import text_encoder_config, unet_config, vae_config
from sd_scripts.models.base_model import SD_V1, SDXL
from sd_scripts.models.checkpoint_file import CheckpointTensors
from sd_scripts.models.ldm_layout import SD2_TEXT_PREFIX, SDXL_TEXT_2_PREFIX, VAE_PREFIX

def _fill(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Give an empty (meta) module the checkpoint's tensors, all of them and nothing else."""
    weights = {key: tensor.contiguous() for key, tensor in state_dict.items()}
    try:
        module.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as error:
        raise UserFacingError(
            f"The {what} in this file has a layout this trainer does not recognise; choose a standard SD 1.x/2.x or SDXL model."
        ) from error
    return module.eval()


def unet_from_ldm(checkpoint: CheckpointTensors, version: str) -> UNet2DConditionModel:
    try:
        config = unet_config(checkpoint.shapes, version)
    except (KeyError, IndexError, StopIteration, ValueError) as error:
        raise UserFacingError("The UNet in this file has an unexpected layout; choose a standard SD 1.x/2.x or SDXL model.") from error
    converted = convert_ldm_unet_checkpoint(checkpoint, config)
    for key, tensor in converted.items():  # SD2 stores proj_in/proj_out as Linear; we keep them as 1x1 convs
        if not config["use_linear_projection"] and re.search(r"\.proj_(in|out)\.weight$", key) and tensor.ndim == 2:
            converted[key] = tensor[:, :, None, None]
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    return _fill(unet, converted, "UNet")


def vae_from_ldm(checkpoint: CheckpointTensors, prefix: str = VAE_PREFIX, version: str = SD_V1) -> AutoencoderKL:
    """The VAE under `prefix` (`first_stage_model.` in a full checkpoint, "" in a VAE-only file), configured for the
    family `version` (SDXL's latent scale differs)."""
    vae_tensors = checkpoint.under(prefix)
    try:
        config = vae_config(vae_tensors.shapes, prefix="", version=version)
    except (KeyError, IndexError) as error:
        raise UserFacingError("The VAE in this file has an unexpected layout; choose a standard SD VAE.") from error
    converted = convert_ldm_vae_checkpoint(vae_tensors, config)
    with init_empty_weights():
        vae = AutoencoderKL.from_config(config)
    return _fill(vae, converted, "VAE")


def text_encoder_from_ldm(checkpoint: CheckpointTensors, version: str) -> CLIPTextModel:
    """SD1 and SDXL's first encoder: OpenAI CLIP, with or without `text_model.` in its keys. SD2: OpenCLIP converted
    to CLIP with its last layer dropped (23 of 24 for real SD2), as sd-scripts and SD2's own diffusers config do."""
    try:
        config = CLIPTextConfig(**text_encoder_config(checkpoint.shapes, version))
    except (KeyError, StopIteration, ValueError) as error:
        raise UserFacingError("The text encoder in this file has an unexpected layout; choose a standard SD model.") from error
    with init_empty_weights():
        text_encoder = CLIPTextModel(config)
    if version in (SD_V1, SDXL):
        converted = convert_ldm_clip_checkpoint(checkpoint)  # strips SD1's and SDXL's CLIP-L prefixes
    else:
        dropped = f"{SD2_TEXT_PREFIX}transformer.resblocks.{config.num_hidden_layers}."
        kept = checkpoint.without(lambda key: not key.startswith(SD2_TEXT_PREFIX) or key.startswith(dropped))
        converted = convert_open_clip_checkpoint(text_encoder, kept, prefix=SD2_TEXT_PREFIX)
    converted = {
        key.removeprefix("text_model."): tensor
        for key, tensor in converted.items()
        if not key.endswith("position_ids") and key != "text_projection.weight"
    }
    return _fill(text_encoder, converted, "text encoder")


def text_encoder_2_from_ldm(checkpoint: CheckpointTensors) -> CLIPTextModelWithProjection:
    """SDXL's OpenCLIP-G (`conditioner.embedders.1.model.`) as CLIP with its text projection, every layer kept: the
    pooled embedding comes from the last one."""
    try:
        config = CLIPTextConfig(**text_encoder_config(checkpoint.shapes, SDXL, second=True))
    except (KeyError, StopIteration, ValueError) as error:
        raise UserFacingError("The second text encoder in this file has an unexpected layout; choose a standard SDXL model.") from error
    with init_empty_weights():
        text_encoder = CLIPTextModelWithProjection(config)
    second = checkpoint.without(lambda key: not key.startswith(SDXL_TEXT_2_PREFIX))
    converted = convert_open_clip_checkpoint(text_encoder, second, prefix=SDXL_TEXT_2_PREFIX)
    return _fill(text_encoder, converted, "second text encoder")
