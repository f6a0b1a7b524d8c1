"""Key names and counts against the exact names sd-scripts gives real SD1.5 and SD2 models.

The full-size U-Net and text encoder are built on the meta device from the real hyper-parameters (written out
here), so the test is instant and allocates no weights; only the small LoRA modules are real.
"""

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from sd_scripts.networks.lora import LoRANetwork

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
)
SD2_UNET = dict(SD15_UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
# sd-scripts drops the last of OpenCLIP-H's 24 layers: SD2's text encoder has 23.
SD2_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
)


def meta_models(unet_config: dict, text_config: dict) -> tuple[CLIPTextModel, UNet2DConditionModel]:
    with torch.device("meta"):
        return CLIPTextModel(CLIPTextConfig(**text_config)), UNet2DConditionModel(**unet_config)


def names(loras) -> list[str]:
    return [lora.lora_name for lora in loras]


def expected_sd15_text_names(layers: int) -> set[str]:
    children = ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2")
    return {f"lora_te_text_model_encoder_layers_{i}_{child}" for i in range(layers) for child in children}


def expected_sd15_unet_names(conv: bool) -> set[str]:
    """SD1.5's kohya names, generated from the block structure rather than from any module walk."""
    per_transformer = ["proj_in", "proj_out"] + [
        f"transformer_blocks_0_{child}"
        for child in (
            "attn1_to_q", "attn1_to_k", "attn1_to_v", "attn1_to_out_0",
            "attn2_to_q", "attn2_to_k", "attn2_to_v", "attn2_to_out_0",
            "ff_net_0_proj", "ff_net_2",
        )
    ]
    attentions = [f"down_blocks_{b}_attentions_{a}" for b in range(3) for a in range(2)]
    attentions += ["mid_block_attentions_0"]
    attentions += [f"up_blocks_{b}_attentions_{a}" for b in (1, 2, 3) for a in range(3)]
    expected = {f"lora_unet_{block}_{child}" for block in attentions for child in per_transformer}
    if conv:
        resnets = [f"down_blocks_{b}_resnets_{r}" for b in range(4) for r in range(2)]
        resnets += [f"mid_block_resnets_{r}" for r in range(2)]
        resnets += [f"up_blocks_{b}_resnets_{r}" for b in range(4) for r in range(3)]
        expected |= {f"lora_unet_{resnet}_{conv}" for resnet in resnets for conv in ("conv1", "conv2", "time_emb_proj")}
        # a resnet has a shortcut conv where its input and output widths differ
        shortcuts = ["down_blocks_1_resnets_0", "down_blocks_2_resnets_0"]
        shortcuts += [f"up_blocks_{b}_resnets_{r}" for b in range(4) for r in range(3)]
        expected |= {f"lora_unet_{resnet}_conv_shortcut" for resnet in shortcuts}
        expected |= {f"lora_unet_down_blocks_{b}_downsamplers_0_conv" for b in range(3)}
        expected |= {f"lora_unet_up_blocks_{b}_upsamplers_0_conv" for b in range(3)}
    return expected


def test_sd15_counts_and_names_match_sd_scripts():
    text_encoder, unet = meta_models(SD15_UNET, SD15_TEXT)
    network = LoRANetwork(text_encoder, unet, dim=4, alpha=1.0)
    assert len(network.text_encoder_loras) == 72
    assert len(network.unet_loras) == 192
    assert set(names(network.text_encoder_loras)) == expected_sd15_text_names(12)
    assert set(names(network.unet_loras)) == expected_sd15_unet_names(conv=False)
    for name in (
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_te_text_model_encoder_layers_11_mlp_fc2",
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        "lora_unet_down_blocks_0_attentions_0_proj_in",
        "lora_unet_mid_block_attentions_0_proj_in",
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2",
        "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj",
    ):
        assert name in names(network.loras), name


def test_sd15_state_dict_keys_and_shapes():
    text_encoder, unet = meta_models(SD15_UNET, SD15_TEXT)
    state_dict = LoRANetwork(text_encoder, unet, dim=8, alpha=4.0).state_dict()
    assert len(state_dict) == 3 * (72 + 192)
    proj_in = "lora_unet_down_blocks_0_attentions_0_proj_in"
    assert state_dict[f"{proj_in}.lora_down.weight"].shape == (8, 320, 1, 1)  # SD1 proj_in is a 1x1 conv
    assert state_dict[f"{proj_in}.lora_up.weight"].shape == (320, 8, 1, 1)
    assert state_dict[f"{proj_in}.alpha"].shape == ()
    assert float(state_dict[f"{proj_in}.alpha"]) == 4.0
    q_proj = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert state_dict[f"{q_proj}.lora_down.weight"].shape == (8, 768)
    assert state_dict[f"{q_proj}.lora_up.weight"].shape == (768, 8)
    to_k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    assert state_dict[f"{to_k}.lora_down.weight"].shape == (8, 768)  # cross-attention reads the 768-wide text
    assert all(tensor.dtype == torch.float32 for tensor in state_dict.values())


def test_sd15_conv_lora_names_and_ranks():
    text_encoder, unet = meta_models(SD15_UNET, SD15_TEXT)
    network = LoRANetwork(text_encoder, unet, dim=4, alpha=1.0, conv_dim=8, conv_alpha=2.0)
    assert len(network.unet_loras) == 278
    assert set(names(network.unet_loras)) == expected_sd15_unet_names(conv=True)
    state_dict = network.state_dict()
    conv1 = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert state_dict[f"{conv1}.lora_down.weight"].shape == (8, 320, 3, 3)
    assert state_dict[f"{conv1}.lora_up.weight"].shape == (320, 8, 1, 1)
    assert float(state_dict[f"{conv1}.alpha"]) == 2.0
    upsampler = "lora_unet_up_blocks_0_upsamplers_0_conv"
    assert state_dict[f"{upsampler}.lora_down.weight"].shape == (8, 1280, 3, 3)
    downsampler = "lora_unet_down_blocks_0_downsamplers_0_conv"
    assert network.get_submodule(downsampler).lora_down.stride == (2, 2)  # same stride as the conv it follows
    # the Linear and the 1x1 conv inside resnets take the normal dim and alpha
    assert state_dict["lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight"].shape == (4, 1280)
    assert state_dict["lora_unet_up_blocks_0_resnets_0_conv_shortcut.lora_down.weight"].shape == (4, 2560, 1, 1)
    assert float(state_dict["lora_unet_up_blocks_0_resnets_0_conv_shortcut.alpha"]) == 1.0


def test_sd2_text_encoder_has_23_layers_and_linear_projections():
    text_encoder, unet = meta_models(SD2_UNET, SD2_TEXT)
    network = LoRANetwork(text_encoder, unet, dim=4)
    assert len(network.text_encoder_loras) == 138
    assert set(names(network.text_encoder_loras)) == expected_sd15_text_names(23)
    assert set(names(network.unet_loras)) == expected_sd15_unet_names(conv=False)  # same U-Net names as SD1
    state_dict = network.state_dict()
    # a diffusers-format SD2 U-Net has Linear proj_in/proj_out, so its LoRA weights are 2-D
    assert state_dict["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"].shape == (4, 1280)
    assert state_dict["lora_te_text_model_encoder_layers_22_mlp_fc1.lora_down.weight"].shape == (4, 1024)
    assert state_dict["lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_v.lora_down.weight"].shape == (4, 1024)


def test_sd2_single_file_layout_keeps_1x1_conv_projections():
    text_encoder, unet = meta_models(dict(SD2_UNET, use_linear_projection=False), SD2_TEXT)
    state_dict = LoRANetwork(text_encoder, unet, dim=4).state_dict()
    assert state_dict["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"].shape == (4, 1280, 1, 1)


def test_text_model_level_is_not_doubled_when_the_encoder_already_has_it():
    """transformers 4 wraps the layers in `text_model`; the names must come out the same as with transformers 5."""
    text_encoder, unet = meta_models(SD15_UNET, SD15_TEXT)
    with_level = torch.nn.Module()
    with_level.text_model = text_encoder
    network = LoRANetwork(with_level, unet, train_unet=False)
    assert set(names(network.text_encoder_loras)) == expected_sd15_text_names(12)
