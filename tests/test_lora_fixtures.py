"""Tiny SD1.5-layout parts for the LoRA and saving tests (shared by tests/test_lora_*.py and test_saving_*.py).

The U-Net keeps SD1.5's block layout (4 levels, 2 resnets per down level, 3 per up level, cross-attention in the
first three) at tiny widths, so every kohya key name is the one real SD1.5 has. Builds in well under a second.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from sd_scripts.networks.lora import LoRANetwork

TINY_TEXT_WIDTH = 32


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        layers_per_block=2,
        block_out_channels=(32, 32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()


def tiny_text_encoder(seed: int = 0, vocab_size: int = 49408) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_TEXT_WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(config).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
    ).eval()


def randomize(network: LoRANetwork, seed: int = 1, std: float = 0.05) -> None:
    """Give every lora_up random weights, so the network changes outputs (a fresh one changes nothing)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in network.loras:
            lora.lora_up.weight.copy_(torch.randn(lora.lora_up.weight.shape, generator=generator) * std)


def unet_inputs(seed: int = 2, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, 8, 8, generator=generator)
    timesteps = torch.tensor([10, 500][:batch])
    context = torch.randn(batch, 77, TINY_TEXT_WIDTH, generator=generator)
    return latents, timesteps, context


def token_ids(batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 49405, (batch, 77), generator=generator)
    ids[:, 0] = 49406
    ids[:, 20:] = 49407
    return ids
