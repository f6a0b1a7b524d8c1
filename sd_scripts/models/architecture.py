"""Reading a model's architecture from its tensor shapes, so that real SD1/SD2 files and tiny test models of the
same block layout load through the same code.

The family's shipped config is the template (activation, norms, scheduler-independent settings); widths, depths,
block types, cross-attention width and latent channels come from the shapes. Head counts cannot be seen in shapes,
so they follow the originals' rules: SD1's UNet has 8 heads everywhere, SD2's UNet and every CLIP text encoder use
64-wide heads; widths that 64 does not divide (test-size models only) use 8-wide heads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sd_scripts.models.base_model import SD_V1
from sd_scripts.models.ldm_layout import SD1_TEXT_PREFIX, SD2_TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX
from sd_scripts.models.shipped_assets import component_config

Shapes = Mapping[str, Sequence[int]]


def attention_heads(width: int) -> int:
    """Heads of an SD2 UNet attention or a CLIP text encoder of this width (64-wide heads, 8-wide when tiny)."""
    return width // 64 if width % 64 == 0 else width // 8


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    """Sorted distinct numbers captured by the pattern's group over all keys."""
    found = {int(m.group(1)) for key in shapes if (m := re.match(pattern, key))}
    return sorted(found)


def unet_config(shapes: Shapes, version: str) -> dict[str, Any]:
    """The diffusers UNet2DConditionModel config of an LDM UNet (`model.diffusion_model.*`)."""
    p = re.escape(UNET_PREFIX)
    input_blocks = _indices(shapes, rf"{p}input_blocks\.(\d+)\.")
    downsamplers = [i for i in input_blocks if f"{UNET_PREFIX}input_blocks.{i}.0.op.weight" in shapes]
    layers_per_block = downsamplers[0] - 1
    per_block = layers_per_block + 1
    num_blocks = len(input_blocks) // per_block
    first_layers = [1 + block * per_block for block in range(num_blocks)]
    channels = [shapes[f"{UNET_PREFIX}input_blocks.{i}.0.out_layers.3.weight"][0] for i in first_layers]
    down_attention = [f"{UNET_PREFIX}input_blocks.{i}.1.proj_in.weight" in shapes for i in first_layers]
    up_attention = [f"{UNET_PREFIX}output_blocks.{b * per_block}.1.proj_in.weight" in shapes for b in range(num_blocks)]
    cross_attention_key = next(k for k in shapes if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight"))
    first_attention = f"{p}input_blocks\\.{first_layers[down_attention.index(True)]}\\.1\\."
    transformer_depth = len(_indices(shapes, rf"{first_attention}transformer_blocks\.(\d+)\."))

    config = component_config(version, "unet")
    config.update(
        in_channels=shapes[f"{UNET_PREFIX}input_blocks.0.0.weight"][1],
        out_channels=shapes[f"{UNET_PREFIX}out.2.weight"][0],
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention],
        cross_attention_dim=shapes[cross_attention_key][1],
        transformer_layers_per_block=transformer_depth,
        # sd-scripts keeps proj_in/proj_out as 1x1 convs for SD2 single files too, so LoRA shapes match its files
        use_linear_projection=False,
    )
    if version != SD_V1:
        config["attention_head_dim"] = [attention_heads(c) for c in channels]
    return config


def vae_config(shapes: Shapes, prefix: str = VAE_PREFIX) -> dict[str, Any]:
    """The diffusers AutoencoderKL config of an LDM VAE (keys under `prefix`)."""
    p = re.escape(prefix)
    num_blocks = len(_indices(shapes, rf"{p}encoder\.down\.(\d+)\."))
    layers_per_block = len(_indices(shapes, rf"{p}encoder\.down\.0\.block\.(\d+)\."))
    config = component_config(SD_V1, "vae")  # SD1 and SD2 share the VAE
    config.update(
        in_channels=shapes[f"{prefix}encoder.conv_in.weight"][1],
        out_channels=shapes[f"{prefix}decoder.conv_out.weight"][0],
        latent_channels=shapes[f"{prefix}decoder.conv_in.weight"][1],
        block_out_channels=[shapes[f"{prefix}encoder.down.{i}.block.0.conv1.weight"][0] for i in range(num_blocks)],
        layers_per_block=layers_per_block,
        down_block_types=["DownEncoderBlock2D"] * num_blocks,
        up_block_types=["UpDecoderBlock2D"] * num_blocks,
    )
    return config


def text_encoder_config(shapes: Shapes, version: str) -> dict[str, Any]:
    """The CLIPTextConfig (as a dict) of an LDM text encoder: OpenAI CLIP for SD1, OpenCLIP for SD2, whose last
    layer the loader drops (see single_file.text_encoder_from_ldm)."""
    if version == SD_V1:
        p = re.escape(SD1_TEXT_PREFIX) + r"(?:text_model\.)?"
        token = next(shapes[k] for k in shapes if re.fullmatch(rf"{p}embeddings\.token_embedding\.weight", k))
        positions = next(shapes[k] for k in shapes if re.fullmatch(rf"{p}embeddings\.position_embedding\.weight", k))
        layers = len(_indices(shapes, rf"{p}encoder\.layers\.(\d+)\."))
        mlp = next(shapes[k] for k in shapes if re.fullmatch(rf"{p}encoder\.layers\.0\.mlp\.fc1\.weight", k))
    else:
        token = shapes[f"{SD2_TEXT_PREFIX}token_embedding.weight"]
        positions = shapes[f"{SD2_TEXT_PREFIX}positional_embedding"]
        layers = len(_indices(shapes, rf"{re.escape(SD2_TEXT_PREFIX)}transformer\.resblocks\.(\d+)\.")) - 1
        mlp = shapes[f"{SD2_TEXT_PREFIX}transformer.resblocks.0.mlp.c_fc.weight"]
    config = component_config(version, "text_encoder")
    config.update(
        vocab_size=token[0],
        hidden_size=token[1],
        max_position_embeddings=positions[0],
        num_hidden_layers=layers,
        intermediate_size=mlp[0],
        num_attention_heads=attention_heads(token[1]),
    )
    return config
