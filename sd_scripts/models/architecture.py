"""Reading a model's architecture from its tensor shapes, so that real SD1/SD2/SDXL files and tiny test models of
the same block layout load through the same code.

The family's shipped config is the template (activation, norms, scheduler-independent settings); widths, depths,
block types, cross-attention width and latent channels come from the shapes. Head counts cannot be seen in shapes,
so they follow the originals' rules: SD1's UNet has 8 heads everywhere, SD2's and SDXL's UNets and every CLIP text
encoder use 64-wide heads; widths that 64 does not divide (test-size models only) use 8-wide heads. SDXL's size/crop
embedding takes 256 sinusoidal features per id, as in SDXL base (the tiny models keep that too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sd_scripts.models.checkpoint_header import (
    SD1_TEXT_PREFIX,
    SD2_TEXT_PREFIX,
    SD_V1,
    SDXL,
    SDXL_TEXT_2_PREFIX,
    SDXL_TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
)
from sd_scripts.models.shipped_assets import component_config

Shapes = Mapping[str, Sequence[int]]


def attention_heads(width: int) -> int:
    """Heads of an SD2/SDXL UNet attention or a CLIP text encoder of this width (64-wide heads, 8-wide when tiny)."""
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
    # transformer blocks per attention of each level (diffusers wants 1 for a level without attention)
    depths = [len(_indices(shapes, rf"{p}input_blocks\.{i}\.1\.transformer_blocks\.(\d+)\.")) or 1 for i in first_layers]

    config = component_config(version, "unet")
    config.update(
        in_channels=shapes[f"{UNET_PREFIX}input_blocks.0.0.weight"][1],
        out_channels=shapes[f"{UNET_PREFIX}out.2.weight"][0],
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention],
        cross_attention_dim=shapes[cross_attention_key][1],
        transformer_layers_per_block=depths if version == SDXL else depths[down_attention.index(True)],
        # sd-scripts keeps proj_in/proj_out as 1x1 convs for SD2 single files too, so LoRA shapes match its files;
        # its SDXL U-Net has Linear ones, as SDXL files store them
        use_linear_projection=version == SDXL,
    )
    if version == SDXL:
        config["projection_class_embeddings_input_dim"] = shapes[f"{UNET_PREFIX}label_emb.0.0.weight"][1]
    if version != SD_V1:
        config["attention_head_dim"] = [attention_heads(c) for c in channels]
    return config


def vae_config(shapes: Shapes, prefix: str = VAE_PREFIX, version: str = SD_V1) -> dict[str, Any]:
    """The diffusers AutoencoderKL config of an LDM VAE (keys under `prefix`). SD1 and SD2 share their VAE; SDXL's has
    the same layout with its own latent scale (0.13025, as sd-scripts uses) and fp32 upcasting for decoding."""
    p = re.escape(prefix)
    num_blocks = len(_indices(shapes, rf"{p}encoder\.down\.(\d+)\."))
    layers_per_block = len(_indices(shapes, rf"{p}encoder\.down\.0\.block\.(\d+)\."))
    config = component_config(SDXL if version == SDXL else SD_V1, "vae")
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


def text_encoder_config(shapes: Shapes, version: str, second: bool = False) -> dict[str, Any]:
    """The CLIPTextConfig (as a dict) of an LDM text encoder: OpenAI CLIP for SD1 and SDXL's first, OpenCLIP for SD2
    (whose last layer the loader drops, see single_file.text_encoder_from_ldm) and SDXL's `second` (all its layers,
    and the text projection that makes the pooled embedding)."""
    if version == SD_V1 or (version == SDXL and not second):
        p = re.escape(SD1_TEXT_PREFIX if version == SD_V1 else SDXL_TEXT_PREFIX) + r"(?:text_model\.)?"
        token = next(shapes[k] for k in shapes if re.fullmatch(rf"{p}embeddings\.token_embedding\.weight", k))
        positions = next(shapes[k] for k in shapes if re.fullmatch(rf"{p}embeddings\.position_embedding\.weight", k))
        layers = len(_indices(shapes, rf"{p}encoder\.layers\.(\d+)\."))
        mlp = next(shapes[k] for k in shapes if re.fullmatch(rf"{p}encoder\.layers\.0\.mlp\.fc1\.weight", k))
    else:
        prefix = SDXL_TEXT_2_PREFIX if second else SD2_TEXT_PREFIX
        token = shapes[f"{prefix}token_embedding.weight"]
        positions = shapes[f"{prefix}positional_embedding"]
        layers = len(_indices(shapes, rf"{re.escape(prefix)}transformer\.resblocks\.(\d+)\.")) - (0 if second else 1)
        mlp = shapes[f"{prefix}transformer.resblocks.0.mlp.c_fc.weight"]
    config = component_config(version, "text_encoder_2" if second else "text_encoder")
    config.update(
        vocab_size=token[0],
        hidden_size=token[1],
        max_position_embeddings=positions[0],
        num_hidden_layers=layers,
        intermediate_size=mlp[0],
        num_attention_heads=attention_heads(token[1]),
    )
    if second:
        config["projection_dim"] = shapes[f"{SDXL_TEXT_2_PREFIX}text_projection"][1]
    return config
