"""The model family of a loaded checkpoint: the file's structure and statements (rules in checkpoint_header.py,
shared with the torch-free reader the wizard uses), and, for an SD2 file that states nothing, A1111's test:
one U-Net forward at t=999 on a constant latent of 0.5 with a constant context. At that step the input is almost
pure noise, so an epsilon model returns about the input itself, while a v model returns about minus the clean
image; a mean of (output - input) below -1 means v.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from diffusers import UNet2DConditionModel

from sd_scripts.models.checkpoint_header import family_from_keys


def detect_model_version(state_dict_keys_and_shapes: Mapping[str, object], metadata: Mapping[str, str] | None = None) -> str:
    """"sd_v1", "sd_v2", "sd_v2_v" or "sdxl_base_v1-0" for a checkpoint's keys. An SD2 file that does not state
    its prediction type comes back as "sd_v2"; `load_base_model` then runs the U-Net test, which needs the weights."""
    return family_from_keys(state_dict_keys_and_shapes, metadata).version


@torch.no_grad()
def unet_predicts_velocity(unet: UNet2DConditionModel) -> bool:
    """A1111's SD2 test: one forward on an 8x8 latent, about a second for a full-size UNet on a CPU."""
    latent = torch.full((1, unet.config.in_channels, 8, 8), 0.5)
    context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5)
    output = unet(latent, torch.tensor([999]), encoder_hidden_states=context).sample
    return (output - latent).mean().item() < -1
