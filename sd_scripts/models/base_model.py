"""The loaded base model: the three diffusers/transformers modules the trainer uses, and what family it is."""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

# `ss_base_model_version` values, as sd-scripts writes them.
SD_V1 = "sd_v1"
SD_V2 = "sd_v2"
SD_V2_V = "sd_v2_v"


@dataclass
class BaseModel:
    """A Stable Diffusion 1.x/2.x model in diffusers module naming (kohya LoRA key names derive from it).

    Weights are float32 on the CPU, as sd-scripts loads them; the trainer moves and casts them.
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    version: str  # SD_V1 | SD_V2 | SD_V2_V
    v2: bool
    v_parameterization: bool
    path: str
    notes: list[str] = field(default_factory=list)  # plain sentences for the user about what the loader decided
