"""Which Stable Diffusion family a checkpoint is, read from the file and never from the user's answer.

Rules, in order:
1. Structure. An SD checkpoint has an LDM UNet (`model.diffusion_model.*`). Its text encoder says the family:
   OpenAI CLIP in transformers layout (`cond_stage_model.transformer.*`) is SD1; OpenCLIP
   (`cond_stage_model.model.*`) is SD2. This holds for tiny test models too, whatever their widths.
   LoRA/LyCORIS files and SDXL files are recognised and refused with a sentence that says so.
2. Prediction type, when the file states it: a `v_pred` key (ComfyUI's marker), or the safetensors metadata
   `modelspec.prediction_type` ("v" / "epsilon") or `modelspec.architecture` (".../-v" suffix = 768-v).
3. For an SD2 file that states nothing, A1111's test: one UNet forward at t=999 on a constant latent of 0.5 with a
   constant context. At that step the input is almost pure noise, so an epsilon model returns about the input
   itself, while a v model returns about minus the clean image; a mean of (output - input) below -1 means v.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from diffusers import UNet2DConditionModel

from sd_scripts.errors import UserFacingError
from sd_scripts.models.base_model import SD_V1, SD_V2, SD_V2_V
from sd_scripts.models.ldm_layout import SD1_TEXT_PREFIX, SD2_TEXT_PREFIX, UNET_PREFIX


def detect_model_version(state_dict_keys_and_shapes: Mapping[str, object], metadata: Mapping[str, str] | None = None) -> str:
    """"sd_v1", "sd_v2" or "sd_v2_v" for an SD checkpoint's keys (rules 1 and 2 above).

    An SD2 file that does not state its prediction type comes back as "sd_v2"; `load_base_model` then runs the
    UNet test (rule 3), which needs the weights.
    """
    keys = list(state_dict_keys_and_shapes)
    v2 = _is_sd2(keys)
    if v2 and stated_v_prediction(keys, metadata or {}):
        return SD_V2_V
    return SD_V2 if v2 else SD_V1


def _is_sd2(keys: list[str]) -> bool:
    if any(k.startswith(("lora_", "lycoris_")) or ".lora_down." in k or ".hada_w1_a" in k for k in keys):
        raise UserFacingError("This file is a LoRA, not a base model; choose a Stable Diffusion checkpoint as the base model.")
    if any(k.startswith("conditioner.embedders.") for k in keys):
        raise UserFacingError("This is an SDXL model, which this trainer does not support yet; choose an SD 1.x or 2.x model.")
    has_unet = f"{UNET_PREFIX}input_blocks.0.0.weight" in keys
    has_sd1_text = any(k.startswith(SD1_TEXT_PREFIX) for k in keys)
    has_sd2_text = any(k.startswith(SD2_TEXT_PREFIX) for k in keys)
    if not has_unet or not (has_sd1_text or has_sd2_text):
        raise UserFacingError(
            "This file is not a Stable Diffusion 1.x/2.x checkpoint (its UNet or text encoder is missing); "
            "choose a full SD model file."
        )
    return has_sd2_text


def stated_v_prediction(keys: Iterable[str], metadata: Mapping[str, str]) -> bool | None:
    """True/False when the file states its prediction type (rule 2), None when it does not."""
    if "v_pred" in keys:
        return True
    prediction = metadata.get("modelspec.prediction_type", "").lower()
    if prediction in ("v", "v_prediction"):
        return True
    if prediction in ("epsilon", "eps"):
        return False
    architecture = metadata.get("modelspec.architecture", "")
    if architecture.startswith("stable-diffusion-v2"):
        return architecture.endswith("-v")
    return None


@torch.no_grad()
def unet_predicts_velocity(unet: UNet2DConditionModel) -> bool:
    """A1111's SD2 test (rule 3): one forward on an 8x8 latent, about a second for a full-size UNet on a CPU."""
    latent = torch.full((1, unet.config.in_channels, 8, 8), 0.5)
    context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5)
    output = unet(latent, torch.tensor([999]), encoder_hidden_states=context).sample
    return (output - latent).mean().item() < -1
