"""Block weights, block dims and block alphas of kohya's LoRA / LoCon, against sd-scripts' rules.

The expected values are written here from sd-scripts' `networks/lora.py`, not from our code: the preset curves as
formulas, the block of each layer from the LDM numbering of SD1.5's input/middle/output blocks (counted one by one,
not with the 3i+j rule), the key names from test_lora_keys' table of the format.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.base import NetworkSpec
from sd_scripts.networks.blocks import block_index, block_lr_weights, preset_weights
from sd_scripts.networks.factory import create_network
from sd_scripts.networks.kinds import network_type_of, parse_network_args
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.saving.lora_file import save_lora
from sd_scripts.train import train
from test_lora_fixtures import randomize, tiny_text_encoder, tiny_unet
from test_lora_keys import expected_sd15_text_names, expected_sd15_unet_names
from test_train_fixtures import demo_args, one_repeat_images  # noqa: F401 (fixture)

SIDE = 12
TEXT_LAYERS = 2  # tiny_text_encoder and the demo model


# --- the expected values, from sd-scripts' rules ----------------------------------------------------------------------
def ldm_block_table() -> dict[str, int]:
    """Kohya name part -> block, counted along LDM's input_blocks / middle_block / output_blocks of SD1.5.

    input_blocks_0 is conv_in (no LoRA); then each level has two (resnet + attention) blocks and a downsampler, the
    last level no downsampler. output_blocks 0-11 (our 13-24) are three (resnet + attention) per level, and a level's
    upsampler sits in its third output block.
    """
    table: dict[str, int] = {}
    block = 1
    for level in range(4):
        for j in range(2):
            table[f"down_blocks_{level}_resnets_{j}"] = table[f"down_blocks_{level}_attentions_{j}"] = block
            block += 1
        if level < 3:
            table[f"down_blocks_{level}_downsamplers_0"] = block
            block += 1
    table["mid_block"] = block
    for level in range(4):
        for j in range(3):
            block += 1
            table[f"up_blocks_{level}_resnets_{j}"] = table[f"up_blocks_{level}_attentions_{j}"] = block
        if level < 3:
            table[f"up_blocks_{level}_upsamplers_0"] = block
    assert block == 24
    return table


BLOCK_OF_PART = ldm_block_table()


def block_of(lora_name: str) -> int:
    part = next(part for part in BLOCK_OF_PART if lora_name.startswith(f"lora_unet_{part}_"))
    return BLOCK_OF_PART[part]


def is_3x3(lora_name: str) -> bool:
    """The 3x3 convs of the conv targets: resnet conv1/conv2 and the down/upsampler convs."""
    return lora_name.endswith(("_conv1", "_conv2", "samplers_0_conv"))


def tiny_unet_names(conv: bool) -> set[str]:
    """SD1.5's kohya U-Net names as the tiny widths (32, 32, 64, 64) have them: level 1's first resnet keeps 32
    channels, so it has no conv_shortcut."""
    return expected_sd15_unet_names(conv) - {"lora_unet_down_blocks_1_resnets_0_conv_shortcut"}


def preset(word: str, base: float = 0.0) -> list[float]:
    """sd-scripts' get_block_lr_weight curves over one side's 12 blocks, i = 0..11."""
    rising_sine = [math.sin(math.pi * (i / (SIDE - 1)) / 2) for i in range(SIDE)]
    rising_line = [i / (SIDE - 1) for i in range(SIDE)]
    curve = {"sine": rising_sine, "cosine": rising_sine[::-1], "linear": rising_line,
             "reverse_linear": rising_line[::-1], "zeros": [0.0] * SIDE}[word]
    return [value + base for value in curve]


def joined(values) -> str:
    return ",".join(f"{value:g}" for value in values)


def names_of(keys) -> set[str]:
    return {key.split(".")[0] for key in keys}


# --- networks on the tiny SD1.5-layout parts --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models():
    return tiny_text_encoder(), tiny_unet()


def build(models, *network_args: str, dim: int = 4, alpha: float | None = 1.0, **changes) -> LoRANetwork:
    spec = NetworkSpec(kind=network_type_of("networks.lora", network_args), dim=dim, alpha=alpha,
                       options=parse_network_args("networks.lora", network_args), **changes)
    return create_network(spec, *models)


def saved(network: LoRANetwork, tmp_path, name: str = "blocks") -> dict[str, torch.Tensor]:
    return load_file(str(save_lora(network.state_dict(), tmp_path / f"{name}.safetensors")))


# --- the numbering and the curves -------------------------------------------------------------------------------------
def test_every_layer_gets_the_block_of_the_ldm_numbering():
    for name in expected_sd15_unet_names(conv=True):
        assert block_index(name) == block_of(name), name
    assert all(block_index(name) is None for name in expected_sd15_text_names(12))


def test_which_blocks_have_layers(models):
    """Block 0 (conv_in) never has a LoRA; a plain LoRA only where there is attention; LoCon everywhere else too."""
    lora_blocks = {block_index(lora.lora_name) for lora in build(models).unet_loras}
    locon_blocks = {block_index(lora.lora_name) for lora in build(models, "conv_dim=2").unet_loras}
    assert lora_blocks == {1, 2, 4, 5, 7, 8, 12, *range(16, 25)}
    assert locon_blocks == set(range(1, 25))


@pytest.mark.parametrize("word", ["sine", "cosine", "linear", "reverse_linear", "zeros"])
@pytest.mark.parametrize("base_text, base", [("", 0.0), ("+.25", 0.25), ("+1", 1.0)])
def test_preset_curves_are_sd_scripts_formulas(word, base_text, base):
    assert preset_weights(word + base_text) == pytest.approx(preset(word, base), abs=1e-12)
    options = parse_network_args("networks.lora", [f"down_lr_weight={word}{base_text}", "up_lr_weight=linear"])
    weights = block_lr_weights(options)
    positive = [value if value > 0 else 0.0 for value in preset(word, base)]
    assert weights == pytest.approx(positive + [1.0] + preset("linear"), abs=1e-12)


def test_the_threshold_zeroes_only_the_weights_given():
    options = parse_network_args("networks.lora", ["down_lr_weight=linear", "block_lr_zero_threshold=0.2"])
    assert block_lr_weights(options) == pytest.approx([0, 0, 0] + preset("linear")[3:] + [1.0] * (1 + SIDE))
    # sd-scripts thresholds what was given: the middle and up sides, not given, stay 1 even above the threshold
    options = parse_network_args("networks.lora", ["mid_lr_weight=0.5", "block_lr_zero_threshold=2"])
    assert list(block_lr_weights(options)) == [1.0] * SIDE + [0.0] + [1.0] * SIDE
    assert block_lr_weights(parse_network_args("networks.lora", ["block_lr_zero_threshold=0.5"])) is None


# --- which keys the file has ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("conv", [False, True], ids=["LoRA", "LoCon"])
def test_a_block_of_weight_zero_has_no_keys_and_every_other_block_has_all(models, tmp_path, conv):
    down = [1.0] * SIDE
    down[4] = 0.0  # down_blocks_1 resnets_0 / attentions_0
    up = [1.0] * SIDE
    up[9] = 0.05  # block 22 (up_blocks_3 first resnet/attention): below the threshold
    network = build(models, *(["conv_dim=2"] if conv else []), f"down_lr_weight={joined(down)}",
                    f"up_lr_weight={joined(up)}", "block_lr_zero_threshold=0.1")
    expected = {name for name in tiny_unet_names(conv) if block_of(name) not in (4, 22)}
    expected |= expected_sd15_text_names(TEXT_LAYERS)  # the text encoder has no blocks
    keys = set(saved(network, tmp_path))
    assert keys == {f"{name}.{tensor}" for name in expected for tensor in ("lora_down.weight", "lora_up.weight",
                                                                             "alpha")}
    assert any(block_of(name) == 4 for name in tiny_unet_names(conv))  # the dropped blocks do have layers


# --- each block's rank and alpha, read from a saved file --------------------------------------------------------------
def ranks_in_file(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, float]]:
    """{name: (rank, alpha)} read from the tensor shapes (down is [r, in, ...], up [out, r, ...]) and alphas."""
    ranks = {}
    for name in names_of(tensors):
        down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
        assert down.shape[0] == up.shape[1]
        assert (tuple(down.shape[2:]) == (3, 3)) == is_3x3(name), name
        ranks[name] = (down.shape[0], float(tensors[f"{name}.alpha"]))
    return ranks


def expected_ranks(conv: bool, dims, alphas, conv_dims=None, conv_alphas=None) -> dict[str, tuple[int, float]]:
    expected = {}
    for name in tiny_unet_names(conv):
        block = block_of(name)
        rank, alpha = (conv_dims[block], conv_alphas[block]) if is_3x3(name) else (dims[block], alphas[block])
        if rank:
            expected[name] = (rank, alpha)
    return expected


def test_block_dims_and_alphas_give_each_block_its_own_rank(models, tmp_path):
    dims = [block % 5 + 1 for block in range(25)]
    dims[5] = 0  # a block of dim 0 has no linear LoRA
    alphas = [block / 2 + 0.5 for block in range(25)]
    network = build(models, f"block_dims={joined(dims)}", f"block_alphas={joined(alphas)}", dim=8, alpha=3.0,
                    train_text_encoder=False)
    assert ranks_in_file(saved(network, tmp_path)) == expected_ranks(False, dims, alphas)


def test_conv_block_dims_and_alphas_give_each_blocks_3x3_convs_their_rank(models, tmp_path):
    dims = [block % 4 + 1 for block in range(25)]
    conv_dims = [(block * 7) % 5 + 1 for block in range(25)]
    conv_dims[20] = 0  # block 20 keeps its linear LoRA but has no conv LoRA
    conv_alphas = [block / 4 + 0.25 for block in range(25)]
    alphas = [block + 1.0 for block in range(25)]
    network = build(models, "conv_dim=6", f"block_dims={joined(dims)}", f"block_alphas={joined(alphas)}",
                    f"conv_block_dims={joined(conv_dims)}", f"conv_block_alphas={joined(conv_alphas)}",
                    train_text_encoder=False)
    ranks = ranks_in_file(saved(network, tmp_path))
    assert ranks == expected_ranks(True, dims, alphas, conv_dims, conv_alphas)
    assert "lora_unet_up_blocks_2_resnets_1_conv1" not in ranks
    assert ranks["lora_unet_up_blocks_2_resnets_1_time_emb_proj"] == (dims[20], alphas[20])


def test_missing_alphas_are_sd_scripts_defaults(models, tmp_path):
    """block_dims without block_alphas: every block's alpha is the network alpha (not its dim); conv_block_dims
    without conv_block_alphas: conv_alpha, 1 when that is not given either; weights alone: dim and conv_dim."""
    dims = [block % 3 + 2 for block in range(25)]
    conv_dims = [block % 2 + 1 for block in range(25)]
    network = build(models, "conv_dim=5", "conv_alpha=2", f"block_dims={joined(dims)}",
                    f"conv_block_dims={joined(conv_dims)}", alpha=3.0, train_text_encoder=False)
    ranks = ranks_in_file(saved(network, tmp_path, "given"))
    assert ranks == expected_ranks(True, dims, [3.0] * 25, conv_dims, [2.0] * 25)

    network = build(models, "conv_dim=5", f"block_dims={joined(dims)}", f"conv_block_dims={joined(conv_dims)}",
                    alpha=3.0, train_text_encoder=False)
    assert ranks_in_file(saved(network, tmp_path, "conv_alpha_missing")) == expected_ranks(
        True, dims, [3.0] * 25, conv_dims, [1.0] * 25)

    network = build(models, "conv_dim=5", "conv_alpha=2", "mid_lr_weight=0", dim=6, alpha=3.0,
                    train_text_encoder=False)
    expected = expected_ranks(True, [6] * 25, [3.0] * 25, [5] * 25, [2.0] * 25)
    assert ranks_in_file(saved(network, tmp_path, "weights_only")) == {
        name: rank for name, rank in expected.items() if block_of(name) != 12}


def test_a_file_with_block_ranks_and_missing_blocks_is_rebuilt_from_its_keys(models, tmp_path):
    dims = [block % 3 + 1 for block in range(25)]
    conv_dims = [block % 4 for block in range(25)]  # some blocks without conv LoRA
    source = build(models, "conv_dim=2", f"block_dims={joined(dims)}", f"conv_block_dims={joined(conv_dims)}",
                   "up_lr_weight=sine")  # sine starts at 0: block 13 is dropped
    randomize(source)
    path = save_lora(source.state_dict(), tmp_path / "blocks.safetensors")
    rebuilt = LoRANetwork.from_weights(*models, path)
    assert [(lora.lora_name, lora.rank) for lora in rebuilt.loras] == [
        (lora.lora_name, lora.rank) for lora in source.loras]
    assert not any(block_index(lora.lora_name) == 13 for lora in rebuilt.unet_loras)
    for key, tensor in source.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], tensor)
    same_args = build(models, "conv_dim=2", f"block_dims={joined(dims)}", f"conv_block_dims={joined(conv_dims)}",
                      "up_lr_weight=sine")
    same_args.load_weights(path)  # continuing without dim_from_weights: the same settings fit the file
    assert torch.equal(same_args.state_dict()["lora_unet_mid_block_attentions_0_proj_in.lora_up.weight"],
                       source.state_dict()["lora_unet_mid_block_attentions_0_proj_in.lora_up.weight"])


# --- the optimizer's groups -------------------------------------------------------------------------------------------
def test_each_block_is_one_group_at_unet_lr_times_its_weight(models):
    network = build(models, "down_lr_weight=linear", "mid_lr_weight=0.5", "up_lr_weight=cosine+.25",
                    "block_lr_zero_threshold=0.2")
    weights = [value if value > 0.2 else 0.0 for value in preset("linear")] + [0.5] + preset("cosine", 0.25)
    owner = {id(parameter): lora for lora in network.loras for parameter in lora.parameters()}

    groups = network.prepare_optimizer_params(text_encoder_lr=1e-4, unet_lr=1e-3, default_lr=1.0)
    text_group, *block_groups = groups
    assert {id(p) for p in text_group["params"]} == {id(p) for lora in network.text_encoder_loras
                                                      for p in lora.parameters()}
    assert text_group["lr"] == 1e-4
    seen_blocks = []
    for group in block_groups:
        blocks = {block_of(owner[id(parameter)].lora_name) for parameter in group["params"]}
        assert len(blocks) == 1
        block = blocks.pop()
        assert group["lr"] == pytest.approx(1e-3 * weights[block])
        seen_blocks.append(block)
    assert sorted(seen_blocks) == sorted({block_of(lora.lora_name) for lora in network.unet_loras})
    assert not {1, 2} & set(seen_blocks)  # linear's 0, 1/11 and 2/11 are not above the threshold: dropped
    assert sum(len(group["params"]) for group in groups) == len(list(network.parameters()))

    # without a unet lr the blocks scale the default lr; a text encoder lr of 0 leaves the text encoder out, frozen
    groups = network.prepare_optimizer_params(text_encoder_lr=0, unet_lr=None, default_lr=2e-3)
    assert [group["lr"] for group in groups] == pytest.approx([g["lr"] * 2 for g in block_groups])
    assert not any(p.requires_grad for lora in network.text_encoder_loras for p in lora.parameters())


def test_block_dims_alone_keep_one_unet_group(models):
    network = build(models, f"block_dims={joined([2] * 25)}")
    assert [group["lr"] for group in network.prepare_optimizer_params(None, 3e-4, 1e-3)] == [1e-3, 3e-4]


# --- what is refused --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("network_args, says", [
    ([f"block_alphas={joined([1] * 25)}"], "block_alphas takes effect only together with block_dims"),
    (["conv_dim=2", f"conv_block_dims={joined([1] * 25)}"], "conv_block_dims takes effect only together"),
    (["conv_dim=2", f"block_dims={joined([1] * 25)}", f"conv_block_alphas={joined([1] * 25)}"],
     "conv_block_alphas takes effect only together with conv_block_dims"),
    ([f"block_dims={joined([1] * 24 + [-1])}"], "negative dim"),
    (["up_lr_weight=cosine+abc"], "cosine\\+.25"),
])
def test_settings_sd_scripts_would_ignore_or_crash_on_are_refused(models, network_args, says):
    with pytest.raises(UserFacingError, match=says):
        build(models, *network_args)


# --- end to end on the demo model -------------------------------------------------------------------------------------
DOWN = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
DIMS = [block % 4 + 1 for block in range(25)]
ALPHAS = [block % 3 + 0.5 for block in range(25)]


def test_training_with_block_weights_and_dims_saves_those_ranks_and_continues(demo, one_repeat_images, tmp_path):
    network_args = [f"down_lr_weight={joined(DOWN)}", "mid_lr_weight=1", "up_lr_weight=cosine",
                    f"block_dims={joined(DIMS)}", f"block_alphas={joined(ALPHAS)}"]
    result = train(demo_args(demo, one_repeat_images, tmp_path, max_train_steps=2, network_args=network_args))
    assert result.ok, result.message
    tensors = load_file(result.lora_path)
    dropped = {0, 1, 2, 3, 24}  # the zero down weights, and cosine's last value (0) on block 24
    expected = {name: rank for name, rank in expected_ranks(False, DIMS, ALPHAS).items()
                if block_of(name) not in dropped}
    assert {name: rank for name, rank in ranks_in_file(tensors).items() if name.startswith("lora_unet_")} == expected
    assert names_of(key for key in tensors if key.startswith("lora_te_")) == expected_sd15_text_names(TEXT_LAYERS)

    continued = train(demo_args(demo, one_repeat_images, tmp_path, max_train_steps=2, output_name="continued",
                                network_weights=result.lora_path, dim_from_weights=True))
    assert continued.ok, continued.message
    continued_tensors = load_file(continued.lora_path)
    assert {key: tensor.shape for key, tensor in continued_tensors.items()} == {
        key: tensor.shape for key, tensor in tensors.items()}
    assert any(not torch.equal(continued_tensors[key], tensors[key]) for key in tensors if "lora_up" in key)


def test_training_a_locon_with_conv_block_dims_saves_those_ranks(demo, one_repeat_images, tmp_path):
    conv_dims = [block % 3 for block in range(25)]  # every third block without conv LoRA
    conv_alphas = [block / 4 + 1 for block in range(25)]
    network_args = ["conv_dim=2", f"block_dims={joined(DIMS)}", f"block_alphas={joined(ALPHAS)}",
                    f"conv_block_dims={joined(conv_dims)}", f"conv_block_alphas={joined(conv_alphas)}",
                    "mid_lr_weight=0"]
    result = train(demo_args(demo, one_repeat_images, tmp_path, max_train_steps=2, network_args=network_args,
                             network_train_unet_only=True))
    assert result.ok, result.message
    expected = {name: rank for name, rank in expected_ranks(True, DIMS, ALPHAS, conv_dims, conv_alphas).items()
                if block_of(name) != 12}
    assert ranks_in_file(load_file(result.lora_path)) == expected
