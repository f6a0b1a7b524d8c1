"""kohya's DyLoRA: its file is a kohya LoRA of rank dim (and of every lower multiple of unit), and in training each
forward teaches one random block of rank `unit` while using all of them, scaled as sd-scripts scales it.

Expected names come from the kohya key table of tests/test_lora_keys.py; expected outputs and scales are computed
here from the formulas (sd-scripts' networks/dylora.py and extract_lora_from_dylora.py), not read from our code.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sd_scripts.models import load_base_model
from sd_scripts.networks.dylora import DyLoRAModule, DyLoRANetwork
from sd_scripts.networks.factory import network_from_file
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.saving import save_lora
from sd_scripts.train import train
from test_lora_fixtures import tiny_text_encoder, tiny_unet, token_ids, unet_inputs
from test_lora_keys import SD15_TEXT, SD15_UNET, expected_sd15_text_names, expected_sd15_unet_names, meta_models
from test_train_fixtures import demo_args, one_repeat_images  # noqa: F401 (fixture)

FILE_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")


def randomize_blocks(network: DyLoRANetwork, seed: int = 1, std: float = 0.05) -> None:
    """Random B blocks (a fresh network's are zero, so it would change nothing)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in network.loras:
            for block in lora.lora_B:
                block.copy_(torch.randn(block.shape, generator=generator) * std)


def gradient_blocks(module: DyLoRAModule) -> tuple[list[int], list[int]]:
    """Indices of the A and B blocks that received a gradient."""
    return ([index for index, block in enumerate(module.lora_A) if block.grad is not None],
            [index for index, block in enumerate(module.lora_B) if block.grad is not None])


@pytest.fixture(scope="module")
def tiny_dylora():
    """A randomised DyLoRA (dim 4, unit 2, alpha 2, with the 3x3 convs) on the tiny SD1.5-layout parts."""
    text_encoder, unet = tiny_text_encoder(), tiny_unet()
    network = DyLoRANetwork(text_encoder, unet, dim=4, alpha=2.0, unit=2, conv_dim=4)
    randomize_blocks(network)
    return text_encoder, unet, network


# --- the file ---------------------------------------------------------------------------------------------------
def test_file_keys_and_shapes_are_those_of_a_kohya_lora_of_rank_dim():
    text_encoder, unet = meta_models(SD15_UNET, SD15_TEXT)
    network = DyLoRANetwork(text_encoder, unet, dim=8, alpha=4.0, unit=4, conv_dim=8)
    names = expected_sd15_text_names(12) | expected_sd15_unet_names(conv=True)
    state_dict = network.state_dict()
    assert set(state_dict) == {f"{name}.{suffix}" for name in names for suffix in FILE_SUFFIXES}
    for name, down, up in (
        ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", (8, 768), (768, 8)),
        ("lora_unet_down_blocks_0_attentions_0_proj_in", (8, 320, 1, 1), (320, 8, 1, 1)),  # SD1's 1x1 conv
        ("lora_unet_down_blocks_0_resnets_0_conv1", (8, 320, 3, 3), (320, 8, 1, 1)),
        ("lora_unet_down_blocks_0_resnets_0_time_emb_proj", (8, 1280), (320, 8)),
    ):
        assert state_dict[f"{name}.lora_down.weight"].shape == down
        assert state_dict[f"{name}.lora_up.weight"].shape == up
        assert float(state_dict[f"{name}.alpha"]) == 4.0
    q_proj = network.get_submodule("lora_te_text_model_encoder_layers_0_self_attn_q_proj")
    assert [tuple(block.shape) for block in q_proj.lora_A] == [(4, 768), (4, 768)]  # dim/unit blocks of rank unit
    assert [tuple(block.shape) for block in q_proj.lora_B] == [(768, 4), (768, 4)]


def test_saved_file_loads_back_with_identical_tensors_and_its_unit(tiny_dylora, tmp_path):
    text_encoder, unet, network = tiny_dylora
    state_dict = network.state_dict()
    path = save_lora(state_dict, tmp_path / "dylora.safetensors",
                     metadata={"ss_network_module": "networks.dylora", "ss_network_args": json.dumps({"unit": "2"})})
    loaded = network_from_file(path, text_encoder, unet)  # the factory reads the metadata
    assert isinstance(loaded, DyLoRANetwork) and loaded.unit == 2
    again = loaded.state_dict()
    assert again.keys() == state_dict.keys()
    assert all(torch.equal(again[key], state_dict[key]) for key in state_dict)
    # without ss_network_args (or with a unit that does not divide the ranks) the unit is sd-scripts' 1
    assert DyLoRANetwork.from_weights(text_encoder, unet, state_dict).unit == 1
    odd = {"ss_network_args": json.dumps({"unit": "3"})}
    assert DyLoRANetwork.from_weights(text_encoder, unet, state_dict, metadata=odd).unit == 1


def test_a_unit_that_does_not_divide_the_dim_or_a_conv_dim_unlike_dim_is_refused():
    from sd_scripts.errors import UserFacingError

    text_encoder, unet = tiny_text_encoder(), tiny_unet()
    with pytest.raises(UserFacingError, match="divisible by 4"):
        DyLoRANetwork(text_encoder, unet, dim=6, unit=4)
    with pytest.raises(UserFacingError, match="conv_dim=4"):
        DyLoRANetwork(text_encoder, unet, dim=4, unit=2, conv_dim=8)


# --- training and eval forwards ---------------------------------------------------------------------------------
def test_each_training_forward_teaches_one_block_and_uses_all_with_sd_scripts_scale():
    dim, unit, alpha = 6, 2, 3.0
    torch.manual_seed(0)
    module = DyLoRAModule("layer", torch.nn.Linear(5, 7), dim, alpha, unit=unit)
    with torch.no_grad():
        for block in module.lora_B:
            block.normal_()
    x = torch.randn(3, 5)
    down = torch.cat([block.detach() for block in module.lora_A])  # every block, above the trained one too
    up = torch.cat([block.detach() for block in module.lora_B], dim=1)
    seen = set()
    for _ in range(40):
        output = module(x)
        output.sum().backward()
        trained_a, trained_b = gradient_blocks(module)
        assert len(trained_a) == 1 and trained_a == trained_b
        trained = trained_a[0]
        seen.add(trained)
        rank_below = trained * unit  # sd-scripts' trainable_rank
        scale = alpha / dim * math.sqrt(dim / (rank_below + unit))
        assert torch.allclose(output, x @ down.T @ up.T * scale, atol=1e-6)
        module.zero_grad(set_to_none=True)
    assert seen == {0, 1, 2}
    module.eval()
    assert torch.allclose(module(x), x @ down.T @ up.T * alpha / dim, atol=1e-6)


def test_the_random_blocks_repeat_for_the_same_seed():
    module = DyLoRAModule("layer", torch.nn.Linear(4, 4), 8, 1.0, unit=1)
    x = torch.randn(2, 4)

    def drawn(seed: int) -> list[int]:
        torch.manual_seed(seed)
        chosen = []
        for _ in range(20):
            module(x).sum().backward()
            chosen += gradient_blocks(module)[0]
            module.zero_grad(set_to_none=True)
        return chosen

    assert drawn(5) == drawn(5)
    assert drawn(5) != drawn(6)


def test_gradient_checkpointing_recomputes_the_forward_with_the_same_block():
    """The recomputation in backward draws again; torch's checkpoint replays its generator, so it is the same block."""
    from torch.utils.checkpoint import checkpoint

    module = DyLoRAModule("layer", torch.nn.Linear(5, 7), 8, 2.0, unit=1)
    with torch.no_grad():
        for block in module.lora_B:
            block.normal_()
    x = torch.randn(3, 5)

    def gradients(checkpointed: bool, seed: int) -> list[torch.Tensor | None]:
        torch.manual_seed(seed)
        module.zero_grad(set_to_none=True)
        output = checkpoint(module, x, use_reentrant=False) if checkpointed else module(x)
        output.square().sum().backward()
        return [None if block.grad is None else block.grad.clone() for block in module.lora_A + module.lora_B]

    for seed in range(6):
        plain, recomputed = gradients(False, seed), gradients(True, seed)
        assert [grad is None for grad in plain] == [grad is None for grad in recomputed]
        assert all(torch.allclose(a, b) for a, b in zip(plain, recomputed) if a is not None)


def test_in_the_network_every_layer_trains_exactly_one_block_per_step(tiny_dylora):
    text_encoder, unet, network = tiny_dylora
    latents, timesteps, context = unet_inputs()
    network.train()
    network.apply_to()
    try:
        unet(latents, timesteps, context).sample.square().mean().backward()
    finally:
        network.restore()
        network.eval()
    for lora in network.unet_loras:
        trained_a, trained_b = gradient_blocks(lora)
        assert len(trained_a) == 1 and trained_a == trained_b, lora.lora_name
    assert all(block.grad is None for lora in network.text_encoder_loras for block in lora.parameters())
    network.zero_grad(set_to_none=True)


def test_eval_forward_and_merge_equal_a_kohya_lora_read_from_the_dylora_file(tiny_dylora):
    text_encoder, unet, network = tiny_dylora
    latents, timesteps, context = unet_inputs()
    ids = token_ids()
    lora = LoRANetwork.from_weights(text_encoder, unet, network.state_dict())
    assert all(module.rank == 4 for module in lora.loras) and len(lora.loras) == len(network.loras)
    with torch.no_grad():
        base = unet(latents, timesteps, context).sample
        outputs = []
        for each in (network, lora):
            each.eval()
            each.apply_to()
            outputs.append((unet(latents, timesteps, context).sample, text_encoder(ids).last_hidden_state))
            each.restore()
        merged_unet = copy.deepcopy(unet)
        DyLoRANetwork.from_weights(text_encoder, merged_unet, network.state_dict()).merge_to()
        merged = merged_unet(latents, timesteps, context).sample
    (ours_unet, ours_text), (lora_unet, lora_text) = outputs
    assert (ours_unet - base).abs().max() > 0.05, "the random DyLoRA should change the U-Net output"
    assert (ours_unet - lora_unet).abs().max() < 1e-5
    assert (ours_text - lora_text).abs().max() < 1e-5
    assert (merged - ours_unet).abs().max() < 1e-4


def test_the_file_cut_to_a_lower_rank_is_a_lora_of_that_rank(tiny_dylora):
    """extract_lora_from_dylora.py keeps the first r rows of lora_down and columns of lora_up, and alpha as it is."""
    text_encoder, unet, network = tiny_dylora
    state_dict, rank = network.state_dict(), 2
    cut = {}
    for key, tensor in state_dict.items():
        if key.endswith("lora_down.weight"):
            cut[key] = tensor[:rank].clone()
        elif key.endswith("lora_up.weight"):
            cut[key] = tensor[:, :rank].clone()
        else:
            cut[key] = tensor.clone()
    lora = LoRANetwork.from_weights(text_encoder, unet, cut)
    assert {module.rank for module in lora.loras} == {rank}
    for module in lora.loras:
        down, up = cut[f"{module.lora_name}.lora_down.weight"], cut[f"{module.lora_name}.lora_up.weight"]
        expected = (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:]) * float(module.alpha) / rank
        assert torch.allclose(module.delta_weight(), expected, atol=1e-7)
    latents, timesteps, context = unet_inputs()
    with torch.no_grad():
        base = unet(latents, timesteps, context).sample
        lora.apply_to()
        with_cut = unet(latents, timesteps, context).sample
        lora.restore()
    assert torch.isfinite(with_cut).all() and (with_cut - base).abs().max() > 0.01


# --- end to end -------------------------------------------------------------------------------------------------
def test_training_writes_a_dylora_file_that_training_can_continue(demo, one_repeat_images, tmp_path):
    args = demo_args(demo, one_repeat_images, tmp_path, network_module="networks.dylora", network_args=["unit=2"],
                     network_dim=4, max_train_steps=3)
    result = train(args)
    assert result.ok, result.message
    with safe_open(result.lora_path, framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_network_module"] == "networks.dylora"
    assert json.loads(metadata["ss_network_args"]) == {"unit": "2"}
    tensors = load_file(result.lora_path)
    assert all(tensor.shape[0] == 4 for key, tensor in tensors.items() if key.endswith("lora_down.weight"))
    assert any(tensor.abs().sum() > 0 for key, tensor in tensors.items() if key.endswith("lora_up.weight"))

    model = load_base_model(str(demo.model))
    network = network_from_file(result.lora_path, model.text_encoder, model.unet)  # picked by its metadata
    assert isinstance(network, DyLoRANetwork) and network.unit == 2

    continued = train(demo_args(demo, one_repeat_images, tmp_path, output_name="continued", max_train_steps=2,
                                network_weights=result.lora_path, dim_from_weights=True))
    assert continued.ok, continued.message
    further = load_file(continued.lora_path)
    assert further.keys() == tensors.keys()
    assert any(not torch.equal(further[key], tensors[key]) for key in tensors if key.endswith("lora_up.weight"))
