"""How a network names the layers of each model family in its files: sd-scripts' key names.

SD1/SD2 LoRA keys use the diffusers module paths (`lora_unet_down_blocks_0_attentions_0_...`). sd-scripts trains SDXL
on its own copy of the original SGM U-Net, so SDXL keys use the original (SGM/LDM) module paths instead:
`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`, `lora_unet_middle_block_1_...`,
`lora_unet_output_blocks_2_2_conv`. Our U-Net is diffusers' for every family, so for SDXL each module path is
translated by the one diffusers -> LDM rule set the checkpoint export uses (`models.ldm_layout.unet_key_to_ldm`):
down_blocks.i.resnets.j -> input_blocks.{3i+j+1}.0, .attentions.j -> .1, downsamplers -> input_blocks.{3(i+1)}.0.op,
mid_block -> middle_block.0/1/2, up_blocks.i.resnets.j -> output_blocks.{3i+j}.0 (.1 attention, upsampler .2 after
an attention, else .1), and inside a resnet norm1/conv1/time_emb_proj/norm2/conv2/conv_shortcut -> in_layers.0/
in_layers.2/emb_layers.1/out_layers.0/out_layers.3/skip_connection. Inside a transformer the names are the same.

Text encoders: one is `lora_te`, two (SDXL) are `lora_te1` (CLIP ViT-L) and `lora_te2` (OpenCLIP bigG), each followed
by the transformers path with its `text_model.` level (`lora_te2_text_model_encoder_layers_0_self_attn_q_proj`).

This module imports nothing heavy: the family test reads a config mapping, the translation imports the layout rules
only when called (that module imports torch for its tensor conversions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"
SDXL_ADDITION_EMBED_TYPE = "text_time"  # diffusers' UNet config value for SDXL's size/crop conditioning
SGM_UNET_STARTS = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")
SDXL_TEXT_ENCODER_PREFIXES = ("lora_te1_", "lora_te2_")


def is_sdxl_unet_config(config: Mapping[str, object]) -> bool:
    """Whether a diffusers UNet config is SDXL's (its size/crop embedding, as diffusers and sd-scripts tell it)."""
    return config.get("addition_embed_type") == SDXL_ADDITION_EMBED_TYPE


def sgm_module_path(path: str, layers_per_block: int, up_block_types: Sequence[str]) -> str:
    """The SGM/LDM path of the Linear or Conv2d at diffusers path `path` in a UNet with this config.

    Raises ValueError for a path the original U-Net has no module for.
    """
    from sd_scripts.models.ldm_layout import unet_key_to_ldm

    try:
        return unet_key_to_ldm(f"{path}.weight", layers_per_block, list(up_block_types)).removesuffix(".weight")
    except KeyError:  # a resnet part that is no layer (its dropout, its activation)
        raise ValueError(f"no SGM name for the U-Net module {path}") from None


def text_encoder_prefixes(count: int) -> list[str]:
    """`lora_te` for one text encoder, `lora_te1`, `lora_te2` for two, as sd-scripts names them."""
    return [TEXT_ENCODER_PREFIX] if count == 1 else [f"{TEXT_ENCODER_PREFIX}{index + 1}" for index in range(count)]


def is_sdxl_lora_key(key: str) -> bool:
    """Whether a kohya key names an SDXL layer (te1/te2 encoders or SGM U-Net names)."""
    return key.startswith(SDXL_TEXT_ENCODER_PREFIXES + SGM_UNET_STARTS)
