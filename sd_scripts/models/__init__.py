"""Base models: loading SD1.x/SD2.x/SDXL (single files and diffusers folders), family detection, LDM export, and text
encoding with clip_skip and long prompts. Importing this package imports torch, diffusers and transformers."""

from sd_scripts.models.base_model import SD_V1, SD_V2, SD_V2_V, SDXL, BaseModel
from sd_scripts.models.family import detect_model_version
from sd_scripts.models.ldm_export import save_ldm_checkpoint
from sd_scripts.models.loading import load_base_model, load_vae
from sd_scripts.models.text_encoding import encode_tokens, tokenize

__all__ = [
    "SD_V1",
    "SD_V2",
    "SD_V2_V",
    "SDXL",
    "BaseModel",
    "detect_model_version",
    "encode_tokens",
    "load_base_model",
    "load_vae",
    "save_ldm_checkpoint",
    "tokenize",
]
