"""SDXL networks: the files name every layer as sd-scripts does (SGM U-Net names, te1/te2), so that they map onto an
SDXL single file the way A1111 and ComfyUI map them, diffusers loads them with our forward's effect, and the
block weights follow sd-scripts' 23-block SDXL scheme.

The expected names are written here from the formats, not from our mapping: A1111/ComfyUI take `lora_unet_X` to the
single-file tensor `model.diffusion_model.<X with dots>.weight`, `lora_te1_text_model_X` to
`conditioner.embedders.0.transformer.text_model.<X>.weight`, and `lora_te2_text_model_encoder_layers_N_<part>` to the
OpenCLIP block `conditioner.embedders.1.model.transformer.resblocks.N` (q/k/v rows of `attn.in_proj_weight`,
`attn.out_proj`, `mlp.c_fc`, `mlp.c_proj`). The block numbers are sd-scripts' `get_block_index(is_sdxl=True)`.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from safetensors.torch import save_file

from network_tables import SGM_TE2_PARTS, SGM_TE2_QKV, SGM_UNET, sgm_file_weight, single_file_shapes
from test_train_fixtures import demo_args
from sd_scripts.errors import UserFacingError
from sd_scripts.networks.base import NetworkSpec
from sd_scripts.networks.blocks import block_lr_weights, block_ranks
from sd_scripts.networks.factory import create_network, network_from_file
from sd_scripts.networks.file_kinds import file_network_module, require_file_fits_model
from sd_scripts.networks.kinds import NETWORK_TYPES, block_counts, parse_network_args
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.saving.lora_file import save_lora
from sd_scripts.train import train
from sd_scripts.training import loop

# Linear layers of an SGM transformer (its `.1` part) that kohya's LoRA trains: proj_in/out, attn1/2, ff.
LORA_LEAVES = re.compile(r"\.(proj_in|proj_out|attn[12]\.to_(q|k|v|out\.0)|ff\.net\.(0\.proj|2))\.weight$")
# The second and deeper blocks of each transformer: left out of the file diffusers loads, whose time goes into PEFT
# wrapping each layer (their names follow block 0's, which the file keeps in every transformer).
DEEPER_BLOCKS = re.compile(r"_transformer_blocks_[1-9]")


def spec(kind: str, dim: int = 2, *args: str) -> NetworkSpec:
    module = NETWORK_TYPES[kind].module
    return NetworkSpec(NETWORK_TYPES[kind], dim=dim, alpha=1.0, options=parse_network_args(module, list(args)))


def randomised(network) -> dict[str, torch.Tensor]:
    """The network's state with every tensor random (a fresh LoRA's up is zero and would show nothing)."""
    generator = torch.Generator().manual_seed(3)
    state = network.state_dict()
    for key, tensor in state.items():
        if not key.endswith("alpha") and tensor.is_floating_point():
            state[key] = torch.randn(tensor.shape, generator=generator) * 0.05
    network.load_weights(state)
    return network.state_dict()


def delta_shape(state: dict[str, torch.Tensor], name: str) -> tuple[int, ...]:
    down, up = state[f"{name}.lora_down.weight"], state[f"{name}.lora_up.weight"]
    return (up.shape[0], *down.shape[1:])


@pytest.fixture(scope="module")
def locon_file(tiny_sdxl, tmp_path_factory):
    """A kohya LoCon (conv_dim) with random weights on the tiny SDXL model: its state, and saved without the deeper
    transformer blocks (DEEPER_BLOCKS) as the file for diffusers."""
    network = create_network(spec("LoCon", 2, "conv_dim=2"), tiny_sdxl.text_encoders, tiny_sdxl.unet)
    state = randomised(network)
    path = tmp_path_factory.mktemp("sdxl_lora") / "locon.safetensors"
    save_lora({key: tensor for key, tensor in state.items() if not DEEPER_BLOCKS.search(key)}, path,
              save_precision="float", metadata={"ss_network_module": "networks.lora",
                                                "ss_base_model_version": "sdxl_base_v1-0"})
    return state, path


def test_every_lora_and_locon_key_maps_onto_the_sgm_single_file(tiny_sdxl, tiny_sdxl_files, locon_file):
    shapes = single_file_shapes(tiny_sdxl_files[0])
    state, _ = locon_file
    names = {key.split(".", 1)[0] for key in state}
    for name in names:
        _, shape = sgm_file_weight(name, shapes)
        assert delta_shape(state, name) == shape, name
    assert {name.split("_text_model")[0] for name in names if name.startswith("lora_te")} == {"lora_te1", "lora_te2"}
    # the plain LoRA is exactly every transformer Linear of the U-Net and every CLIP attention/MLP Linear
    plain = LoRANetwork(tiny_sdxl.text_encoders, tiny_sdxl.unet, dim=2)
    unet_names = {lora.lora_name for lora in plain.unet_loras}
    expected = {"lora_unet_" + key[len(SGM_UNET):-len(".weight")].replace(".", "_")
                for key in shapes if key.startswith(SGM_UNET) and LORA_LEAVES.search(key)}
    assert unet_names == expected
    assert unet_names <= names
    te_layers = {f"lora_te{i}_text_model_encoder_layers_{n}_{part}" for i, encoder in ((1, tiny_sdxl.text_encoder),
                                                                                     (2, tiny_sdxl.text_encoder_2))
                 for n in range(encoder.config.num_hidden_layers) for part in SGM_TE2_QKV + tuple(SGM_TE2_PARTS)}
    assert {lora.lora_name for lora in plain.text_encoder_loras} == te_layers
    dylora = create_network(spec("DyLoRA", 2, "unit=1"), tiny_sdxl.text_encoders, tiny_sdxl.unet)
    assert {name.split(".", 1)[0] for name in dylora.state_dict()} == unet_names | te_layers
    # LoCon adds the resnets' convs, time projections and shortcuts, the down- and upsamplers, all under SGM names
    conv_names = names - unet_names - te_layers
    resnet_layers = ("in_layers_2", "emb_layers_1", "out_layers_3", "skip_connection")
    assert {re.sub(r"_\d+_(\d+_)?", "_N_", name) for name in conv_names} == (
        {f"lora_unet_{part}_N_{layer}" for part in ("input_blocks", "middle_block", "output_blocks")
         for layer in resnet_layers} - {"lora_unet_middle_block_N_skip_connection"}  # same width: no shortcut
    ) | {"lora_unet_input_blocks_N_op", "lora_unet_output_blocks_N_conv"}


def test_diffusers_sdxl_pipeline_loads_the_file_with_the_effect_of_our_forward(tiny_sdxl, locon_file):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    _, path = locon_file
    network = network_from_file(path, tiny_sdxl.text_encoders, tiny_sdxl.unet)  # our network as the file says
    pipeline = StableDiffusionXLPipeline(  # copies of the parts the LoRA goes into: the session's model stays as it is
        vae=tiny_sdxl.vae, text_encoder=copy.deepcopy(tiny_sdxl.text_encoder),
        text_encoder_2=copy.deepcopy(tiny_sdxl.text_encoder_2), tokenizer=tiny_sdxl.tokenizer,
        tokenizer_2=tiny_sdxl.tokenizer_2, unet=copy.deepcopy(tiny_sdxl.unet), scheduler=EulerDiscreteScheduler())
    pipeline.load_lora_weights(str(path))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 5, tiny_sdxl.unet.config.cross_attention_dim, generator=generator)
    added = {"text_embeds": torch.randn(1, tiny_sdxl.text_encoder_2.config.projection_dim, generator=generator),
             "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])}
    tokens = torch.tensor([[49406, 320, 1929, 49407]])

    def outputs(unet, encoder_1, encoder_2) -> list[torch.Tensor]:
        return [unet(latents, torch.tensor([500]), encoder_hidden_states=context, added_cond_kwargs=added).sample,
                encoder_1(tokens, output_hidden_states=True).hidden_states[-2],
                encoder_2(tokens, output_hidden_states=True).text_embeds]

    with torch.no_grad():
        before = outputs(tiny_sdxl.unet, tiny_sdxl.text_encoder, tiny_sdxl.text_encoder_2)
        network.apply_to()
        try:
            ours = outputs(tiny_sdxl.unet, tiny_sdxl.text_encoder, tiny_sdxl.text_encoder_2)
        finally:
            network.restore()
        theirs = outputs(pipeline.unet, pipeline.text_encoder, pipeline.text_encoder_2)
    for base, mine, diffusers_output in zip(before, ours, theirs):
        assert (mine - base).abs().max() > 1e-3  # the LoRA acts on every part
        torch.testing.assert_close(diffusers_output, mine, rtol=1e-4, atol=1e-5)


def test_loha_and_lokr_write_lycoris_keys_under_sgm_names(tiny_sdxl, tiny_sdxl_files):
    """LoHa on the transformers and encoders (and read back from its keys), LoKr on the resnets and samplers."""
    shapes = single_file_shapes(tiny_sdxl_files[0])
    states = {}
    for kind, preset, suffix in (("LoHa", "attn-mlp", "hada_w1_a"), ("LoKr", "unet-convblock-only", "lokr_w1")):
        network = create_network(spec(kind, 2, f"algo={kind.lower()}", f"preset={preset}"), tiny_sdxl.text_encoders,
                                 tiny_sdxl.unet)
        states[kind] = network.state_dict()
        names = {key.split(".", 1)[0] for key in states[kind]}
        assert all(f"{name}.{suffix}" in states[kind] for name in names)
        for name in names:
            sgm_file_weight(name, shapes)  # a KeyError names a layer no SDXL reader would find
    assert {"lora_unet_input_blocks_3_0_op", "lora_unet_output_blocks_5_2_conv"} <= names
    loha = {key: tensor for key, tensor in states["LoHa"].items() if not DEEPER_BLOCKS.search(key)}
    assert any(key.startswith("lora_te2_") for key in loha) and any("middle_block_1" in key for key in loha)
    rebuilt = network_from_file(loha, tiny_sdxl.text_encoders, tiny_sdxl.unet,
                                metadata={"ss_network_module": "lycoris.kohya"})
    assert set(rebuilt.state_dict()) == set(loha)


def sd_scripts_sdxl_block(lora_name: str) -> int:
    """networks/lora.py get_block_index(lora_name, is_sdxl=True), written down from its source."""
    name = lora_name.removeprefix("lora_unet_")
    if name.startswith(("time_embed_", "label_emb_")):
        return 0
    if name.startswith("input_blocks_"):
        return 1 + int(name.split("_")[2])
    if name.startswith("middle_block_"):
        return 10 + int(name.split("_")[2])
    if name.startswith("output_blocks_"):
        return 13 + int(name.split("_")[2])
    return 22 if name.startswith("out_") else -1


def test_sdxl_block_weights_and_dims_follow_sd_scripts_23_blocks(tiny_sdxl):
    counts = block_counts(is_sdxl=True)
    assert (counts.per_side, counts.middle, counts.total) == (9, 3, 23)
    dims = [1 + block % 3 for block in range(23)]
    args = ["conv_dim=2", "block_dims=" + ",".join(map(str, dims)),
            "down_lr_weight=1,1,1,1,0,1,1,1,1", "mid_lr_weight=1,0,0.5", "up_lr_weight=" + ",".join(["0.5"] * 9)]
    network = create_network(spec("LoCon", 4, *args), tiny_sdxl.text_encoders, tiny_sdxl.unet)
    state = network.state_dict()
    blocks = {}
    for lora in network.unet_loras:
        block = sd_scripts_sdxl_block(lora.lora_name)
        blocks[lora.lora_name] = block
        if state[f"{lora.lora_name}.lora_down.weight"].shape[2:] in ((), (1, 1)):  # linear dims read back from shapes
            assert state[f"{lora.lora_name}.lora_down.weight"].shape[0] == dims[block], lora.lora_name
    assert 5 not in blocks.values() and 11 not in blocks.values()  # input_blocks_4 and middle_block_1 have weight 0
    assert {2, 4, 10, 12, 13, 21} <= set(blocks.values()) and -1 not in blocks.values()
    rates = {group["lr"] for group in network.prepare_optimizer_params(1e-4, 1e-3, 1e-3)}
    assert rates == {1e-4, 1e-3, 5e-4}
    with pytest.raises(UserFacingError, match="For SDXL models down_lr_weight takes 9 comma-separated values, not 12"):
        create_network(spec("LoRA", 4, "down_lr_weight=" + ",".join(["1"] * 12)), tiny_sdxl.text_encoders,
                       tiny_sdxl.unet)
    with pytest.raises(UserFacingError, match=r"block_dims needs 23 comma-separated values .*\(base, 9 input"):
        create_network(spec("LoRA", 4, "block_dims=" + ",".join(["4"] * 25)), tiny_sdxl.text_encoders, tiny_sdxl.unet)
    # before the model is known (the trainer's checks), the lists' lengths say the family, consistently
    options = spec("LoCon", 4, *args).options
    assert len(block_ranks(options, dim=4, alpha=1.0, conv_dim=2, conv_alpha=None).dims) == 23
    assert len(block_lr_weights(spec("LoRA", 4, "up_lr_weight=" + ",".join(["1"] * 12)).options)) == 25
    with pytest.raises(UserFacingError, match="For SDXL models up_lr_weight takes 9"):
        block_lr_weights(spec("LoRA", 4, "mid_lr_weight=1,1,1", "up_lr_weight=" + ",".join(["1"] * 12)).options)


def test_sdxl_network_files_are_told_from_their_names_and_the_other_family_is_refused_in_one_sentence(tiny_sdxl):
    sdxl_keys = ["lora_unet_input_blocks_4_1_proj_in.lora_down.weight", "lora_te1_text_model_x.alpha"]
    sd_keys = ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "lora_te_text_model_x.alpha"]
    with pytest.raises(UserFacingError, match="^style.safetensors was made for SDXL models but the base model is "
                                              r"SD 1.x/2.x; choose an SDXL base model or a file made for SD 1.x/2.x.$"):
        require_file_fits_model("style.safetensors", sdxl_keys, {}, model_is_sdxl=False)
    with pytest.raises(UserFacingError, match="was made for SD 1.x/2.x models but the base model is SDXL"):
        require_file_fits_model("old.safetensors", sd_keys, {}, model_is_sdxl=True)
    require_file_fits_model("style.safetensors", sdxl_keys, {}, model_is_sdxl=True)
    with pytest.raises(UserFacingError, match="^The network file was made for SD 1.x/2.x models but the base model"):
        network_from_file({key: torch.zeros(1, 4) for key in sd_keys}, tiny_sdxl.text_encoders, tiny_sdxl.unet)
    require_file_fits_model("old.safetensors", sd_keys, {"ss_base_model_version": "sdxl_base_v1-0"},
                            model_is_sdxl=False)  # the names say more than the metadata
    # kohya's LoRA never trains SDXL's conv_in (input_blocks_0_0) or out.2: LyCORIS' LoCon does
    lycoris_locon = ["lora_unet_input_blocks_0_0.lora_down.weight", "lora_unet_input_blocks_0_0.lora_up.weight"]
    assert file_network_module(lycoris_locon, {}) == "lycoris.kohya"
    assert file_network_module(sdxl_keys[:1], {}) == "networks.lora"


def test_a_lora_to_continue_from_of_the_other_family_is_refused_before_the_model_loads(demo, tiny_sdxl_files, tmp_path,
                                                                                        monkeypatch):
    loads = []
    monkeypatch.setattr(loop, "load_base_model", lambda *args, **kwargs: loads.append(args))
    xl_lora, sd_lora = tmp_path / "xl_style.safetensors", tmp_path / "sd_style.safetensors"
    save_file({"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(2, 64)}, str(xl_lora))
    save_file({"lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 32)}, str(sd_lora))
    sd_model, xl_model = demo.model, tiny_sdxl_files[0]
    for model, weights, sentence in (
        (sd_model, xl_lora, "The LoRA to continue from, xl_style.safetensors, was made for SDXL models but the base "
                            "model is SD 1.x/2.x; choose an SDXL base model or a file made for SD 1.x/2.x."),
        (xl_model, sd_lora, "The LoRA to continue from, sd_style.safetensors, was made for SD 1.x/2.x models but the "
                            "base model is SDXL; choose an SD 1.x/2.x base model or a file made for SDXL."),
    ):
        for dim_from_weights in (False, True):  # taking the file's own shape does not make it fit the other family
            result = train(demo_args(demo, demo.images, tmp_path / "out", pretrained_model_name_or_path=str(model),
                                     network_weights=str(weights), dim_from_weights=dim_from_weights))
            assert (result.ok, result.message) == (False, sentence)
    assert loads == []  # refused from the two files' headers: no model was loaded


def test_a_real_size_sdxl_gets_the_kohya_module_counts():
    """SDXL base on the meta device: the counts derive from its architecture (sd-scripts logs 72 + 192 text-encoder
    and 722 U-Net modules for it)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sd_scripts.models import SDXL
    from sd_scripts.models.shipped_assets import component_config

    config = component_config(SDXL, "unet")
    te_configs = [CLIPTextConfig(**component_config(SDXL, part)) for part in ("text_encoder", "text_encoder_2")]
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
        encoders = [CLIPTextModel(te_configs[0]), CLIPTextModelWithProjection(te_configs[1])]
    network = LoRANetwork(encoders, unet, dim=1)
    depths = config["transformer_layers_per_block"]  # per level, e.g. [1, 2, 10]: level 0 has no attention
    attention_levels = [d for d, kind in zip(depths, config["down_block_types"]) if kind.startswith("CrossAttn")]
    per_block = 10  # attn1 q/k/v/out, attn2 q/k/v/out, ff.net.0.proj, ff.net.2
    down = sum(config["layers_per_block"] * (per_block * d + 2) for d in attention_levels)
    up = sum((config["layers_per_block"] + 1) * (per_block * d + 2) for d in attention_levels)
    middle = per_block * depths[-1] + 2
    assert len(network.unet_loras) == down + middle + up == 722
    expected_te = [6 * c.num_hidden_layers for c in te_configs]
    assert expected_te == [72, 192]
    names = [lora.lora_name for lora in network.text_encoder_loras]
    assert [sum(name.startswith(f"lora_te{i}_") for name in names) for i in (1, 2)] == expected_te
