"""The original single-file layout of SD1.x/2.x (LDM / CompVis) and SDXL (SGM, the same U-Net names), and how our
diffusers modules map onto it.

Reading single files goes through diffusers' own converters (see single_file.py); writing them back is done here,
rule by rule, so that a file we write reads back identically in diffusers, A1111, ComfyUI and sd-scripts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from sd_scripts.models.checkpoint_header import (  # noqa: F401  (the prefixes are part of the layout)
    SD1_TEXT_PREFIX,
    SD2_TEXT_PREFIX,
    SDXL_TEXT_2_PREFIX,
    SDXL_TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
)

UNET_RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET_NAMES = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
VAE_ATTENTION_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
OPENCLIP_LAYER_NAMES = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def unet_key_to_ldm(key: str, layers_per_block: int, up_block_types: list[str]) -> str:
    """The LDM name of one diffusers UNet2DConditionModel tensor name."""
    per_block = layers_per_block + 1  # LDM counts each block's resnets plus its down/upsampler
    fixed = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",  # SDXL's size/crop + pooled-text embedding
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    module, _, leaf = key.rpartition(".")
    if module in fixed:
        return f"{fixed[module]}.{leaf}"
    if match := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)", key):
        block, layer, name, leaf = match.groups()
        return f"input_blocks.{int(block) * per_block + int(layer) + 1}.0.{UNET_RESNET_NAMES[name]}.{leaf}"
    if match := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        block, layer, rest = match.groups()
        return f"input_blocks.{int(block) * per_block + int(layer) + 1}.1.{rest}"
    if match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        block, leaf = match.groups()
        return f"input_blocks.{(int(block) + 1) * per_block}.0.op.{leaf}"
    if match := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(\w+)\.(\w+)", key):
        layer, name, leaf = match.groups()
        return f"middle_block.{2 * int(layer)}.{UNET_RESNET_NAMES[name]}.{leaf}"
    if match := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{match.group(1)}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)", key):
        block, layer, name, leaf = match.groups()
        return f"output_blocks.{int(block) * per_block + int(layer)}.0.{UNET_RESNET_NAMES[name]}.{leaf}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        block, layer, rest = match.groups()
        return f"output_blocks.{int(block) * per_block + int(layer)}.1.{rest}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        block, leaf = match.groups()
        # the upsampler follows the block's last resnet, after its attention when the block has one
        slot = 2 if up_block_types[int(block)].startswith("CrossAttn") else 1
        return f"output_blocks.{int(block) * per_block + layers_per_block}.{slot}.conv.{leaf}"
    raise ValueError(f"no LDM name for the UNet tensor {key}")


def vae_key_to_ldm(key: str, num_blocks: int) -> str:
    """The LDM name of one diffusers AutoencoderKL tensor name (LDM numbers decoder blocks from the bottom)."""
    if match := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(\w+)", key):
        return f"{match.group(1)}.norm_out.{match.group(2)}"
    if match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)", key):
        block, layer, name, leaf = match.groups()
        return f"encoder.down.{block}.block.{layer}.{VAE_RESNET_NAMES[name]}.{leaf}"
    if match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"encoder.down.{match.group(1)}.downsample.conv.{match.group(2)}"
    if match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)", key):
        block, layer, name, leaf = match.groups()
        return f"decoder.up.{num_blocks - 1 - int(block)}.block.{layer}.{VAE_RESNET_NAMES[name]}.{leaf}"
    if match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        return f"decoder.up.{num_blocks - 1 - int(match.group(1))}.upsample.conv.{match.group(2)}"
    if match := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(\w+)\.(\w+)", key):
        half, layer, name, leaf = match.groups()
        return f"{half}.mid.block_{int(layer) + 1}.{VAE_RESNET_NAMES[name]}.{leaf}"
    if match := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(\w+)", key):
        half, name, leaf = match.groups()
        return f"{half}.mid.attn_1.{VAE_ATTENTION_NAMES[name]}.{leaf}"
    return key  # conv_in, conv_out, quant_conv, post_quant_conv keep their names


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping, linear_projection: bool) -> dict[str, torch.Tensor]:
    """UNet tensors under `model.diffusion_model.`; SD2 files store proj_in/proj_out as Linear (2-D) weights."""
    converted = {}
    for key, tensor in state_dict.items():
        if linear_projection and re.search(r"\.proj_(in|out)\.weight$", key) and tensor.ndim == 4:
            tensor = tensor[:, :, 0, 0]
        ldm_key = unet_key_to_ldm(key, config["layers_per_block"], list(config["up_block_types"]))
        converted[UNET_PREFIX + ldm_key] = tensor.contiguous()
    return converted


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], num_blocks: int, prefix: str = VAE_PREFIX) -> dict[str, torch.Tensor]:
    """VAE tensors in LDM names; the mid-block attention projections become 1x1 convs as in the original."""
    converted = {}
    for key, tensor in state_dict.items():
        ldm_key = vae_key_to_ldm(key, num_blocks)
        if ".mid.attn_1." in ldm_key and ldm_key.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        converted[prefix + ldm_key] = tensor.contiguous()
    return converted


def sd1_text_encoder_to_ldm(state_dict: Mapping[str, torch.Tensor], prefix: str = SD1_TEXT_PREFIX) -> dict[str, torch.Tensor]:
    """OpenAI CLIP (SD1's encoder; SDXL's first under `SDXL_TEXT_PREFIX`): transformers 5 names have no
    `text_model.`; single files do."""
    return {
        f"{prefix}text_model.{key}": tensor.contiguous()
        for key, tensor in state_dict.items()
        if not key.endswith("position_ids")
    }


def open_clip_text_encoder_to_ldm(state_dict: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """A CLIPTextModel's tensors (no `text_model.` prefix) in OpenCLIP names, without a prefix; q/k/v are merged
    into OpenCLIP's in_proj."""
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.endswith("position_ids"):
            continue
        if key == "embeddings.token_embedding.weight":
            converted["token_embedding.weight"] = tensor
        elif key == "embeddings.position_embedding.weight":
            converted["positional_embedding"] = tensor
        elif match := re.fullmatch(r"final_layer_norm\.(\w+)", key):
            converted[f"ln_final.{match.group(1)}"] = tensor
        elif match := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(\w+)", key):
            continue  # merged below into in_proj
        elif match := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(\w+)", key):
            layer, name, leaf = match.groups()
            converted[f"transformer.resblocks.{layer}.{OPENCLIP_LAYER_NAMES[name]}.{leaf}"] = tensor
        else:
            raise ValueError(f"no OpenCLIP name for the text encoder tensor {key}")
    for layer in range(num_layers):
        for leaf in ("weight", "bias"):
            parts = [state_dict[f"encoder.layers.{layer}.self_attn.{p}_proj.{leaf}"] for p in "qkv"]
            converted[f"transformer.resblocks.{layer}.attn.in_proj_{leaf}"] = torch.cat(parts)
    return converted


def sd2_text_encoder_to_ldm(state_dict: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """OpenCLIP layout. SD2 loading drops OpenCLIP's last layer, so, as sd-scripts does, a copy of the last layer we
    have is written in its place, with an identity text projection: the file then has the 24-block shape other
    tools expect, and those extra tensors are never used to condition the UNet."""
    converted = open_clip_text_encoder_to_ldm(state_dict, num_layers)
    last = f"transformer.resblocks.{num_layers - 1}."
    for key in [k for k in converted if k.startswith(last)]:
        converted[key.replace(last, f"transformer.resblocks.{num_layers}.")] = converted[key].clone()
    token_embedding = state_dict["embeddings.token_embedding.weight"]
    converted["text_projection"] = torch.eye(token_embedding.shape[1], dtype=token_embedding.dtype)
    # OpenCLIP's initial value; SD never uses it
    converted["logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=token_embedding.dtype)
    return {SD2_TEXT_PREFIX + key: tensor.contiguous() for key, tensor in converted.items()}


def sdxl_text_encoder_2_to_ldm(state_dict: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """SDXL's OpenCLIP-G from a CLIPTextModelWithProjection: every layer, and the projection as OpenCLIP stores it
    ([width, embedding], the transpose of the Linear weight)."""
    text_model = {key.removeprefix("text_model."): tensor for key, tensor in state_dict.items() if key.startswith("text_model.")}
    converted = open_clip_text_encoder_to_ldm(text_model, num_layers)
    projection = state_dict["text_projection.weight"]
    converted["text_projection"] = projection.T
    # a trained CLIP's clamped value, as SDXL base stores it; SDXL never uses it
    converted["logit_scale"] = torch.tensor(math.log(100.0), dtype=projection.dtype)
    return {SDXL_TEXT_2_PREFIX + key: tensor.contiguous() for key, tensor in converted.items()}
