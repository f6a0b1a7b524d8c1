"""The loaded base model: the diffusers/transformers modules the trainer uses, and what family it is."""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

# `ss_base_model_version` values, defined with the family rules, which need no torch
from sd_scripts.models.checkpoint_header import SD_V1, SD_V2, SD_V2_V, SDXL

__all__ = ["SD_V1", "SD_V2", "SD_V2_V", "SDXL", "BaseModel"]


@dataclass
class BaseModel:
    """A Stable Diffusion 1.x/2.x or SDXL model in diffusers module naming (kohya LoRA key names derive from it).

    For SDXL, `text_encoder` is CLIP ViT-L and `text_encoder_2` OpenCLIP bigG with its text projection (the pooled
    embedding the U-Net gets); `tokenizer_2` pads with "!" (id 0), as SDXL's second tokenizer does.
    Weights are float32 on the CPU, as sd-scripts loads them; the trainer moves and casts them.
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    version: str  # SD_V1 | SD_V2 | SD_V2_V | SDXL
    v2: bool
    v_parameterization: bool
    path: str
    notes: list[str] = field(default_factory=list)  # plain sentences for the user about what the loader decided
    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_2: CLIPTokenizer | None = None

    @property
    def is_sdxl(self) -> bool:
        return self.version == SDXL

    @property
    def text_encoders(self) -> list[CLIPTextModel | CLIPTextModelWithProjection]:
        """The encoders in sd-scripts' order (its LoRA names them te1, te2 for SDXL)."""
        return [self.text_encoder] if self.text_encoder_2 is None else [self.text_encoder, self.text_encoder_2]
