"""The table of network types and options, and what a saved file's tensor names say about its kind.

Expected values come from sd-scripts' and LyCORIS' conventions: `network_module` names, LyCORIS' `algo=` words
and its older spellings of the CP switch (`use_conv_cp`, `disable_conv_cp`), the tensor names of each format.
"""

from __future__ import annotations

from pathlib import Path

import numpy
import pytest
from safetensors.numpy import save_file

from sd_scripts.args import TrainArgs
from sd_scripts.errors import UserFacingError
from sd_scripts.networks.file_kinds import file_lycoris_algo, file_network_module, read_file_keys
from sd_scripts.networks.kinds import NETWORK_TYPES, OPTIONS, network_type_of, parse_network_args
from sd_scripts.training.validation import validate_args

NAME = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


@pytest.mark.parametrize("module, args, expected", [
    ("networks.lora", [], "LoRA"),
    ("networks.lora", ["conv_dim=8"], "LoCon"),
    ("sd_scripts.networks.lora", [], "LoRA"),  # the original tool's spelling
    ("networks.dylora", ["unit=4"], "DyLoRA"),
    ("lycoris.kohya", [], "LyCORIS LoCon"),  # LyCORIS' default algo is lora
    ("lycoris.kohya", ["algo=lora"], "LyCORIS LoCon"),
    ("lycoris.kohya", ["algo=locon"], "LyCORIS LoCon"),
    ("lycoris.kohya", ["algo=LoHa"], "LoHa"),
    ("lycoris.kohya", ["algo=lokr"], "LoKr"),
    ("lycoris.kohya", ["algo=ia3"], "IA3"),
])
def test_network_modules_and_algos_name_their_types(module, args, expected):
    assert network_type_of(module, args).name == expected


def test_options_are_typed_and_the_old_cp_spellings_read_as_use_tucker():
    options = parse_network_args("lycoris.kohya", ["algo=lokr", "conv_dim=8", "conv_alpha=0.5", "factor=-1",
                                                   "full_matrix=true", "dora_wd=False", "rank_dropout=0.1",
                                                   "disable_conv_cp=True"])
    assert options == {"algo": "lokr", "conv_dim": 8, "conv_alpha": 0.5, "factor": -1, "full_matrix": True,
                       "dora_wd": False, "rank_dropout": 0.1, "use_tucker": False}
    assert parse_network_args("lycoris.kohya", ["algo=loha", "use_conv_cp=True"])["use_tucker"] is True
    blocks = parse_network_args("networks.lora", ["down_lr_weight=cosine+.25", "block_dims=" + ",".join(["4"] * 25)])
    assert blocks == {"down_lr_weight": "cosine+.25", "block_dims": (4,) * 25}


@pytest.mark.parametrize("module, args, words", [
    ("lycoris.kohya", ["algo=glora"], "not one this trainer offers"),
    ("networks.oft", [], "not one this trainer has"),
    ("networks.lora", ["algo=loha"], "does not apply to LoRA"),
    ("lycoris.kohya", ["algo=ia3", "conv_dim=4"], "does not apply to IA3"),
    ("lycoris.kohya", ["algo=loha", "rank_dropout=1.5"], "rank_dropout needs a number from 0 to below 1"),
    ("lycoris.kohya", ["algo=loha", "dropout=0.1"], "does not apply to LoHa"),  # acts in no mode sd-scripts uses
    ("networks.lora", ["block_dims=4,4"], r"25 \(SDXL: 23\) comma-separated whole numbers"),
    ("networks.lora", ["conv_dim"], "not of the form key=value"),
])
def test_what_a_type_cannot_take_is_one_sentence(module, args, words):
    with pytest.raises(UserFacingError, match=words):
        parse_network_args(module, args)


def test_every_option_of_the_table_has_a_parser():
    for kind in NETWORK_TYPES.values():
        for option in kind.options + kind.required:
            assert option in OPTIONS


@pytest.mark.parametrize("suffixes, metadata, module, algo", [
    ((".lora_down.weight", ".lora_up.weight", ".alpha"), {}, "networks.lora", None),
    ((".lora_down.weight", ".lora_up.weight", ".alpha"), {"ss_network_module": "networks.dylora"}, "networks.dylora",
     None),
    ((".lora_down.weight", ".lora_up.weight", ".alpha"), {"ss_network_module": "lycoris.kohya"}, "lycoris.kohya",
     "locon"),
    ((".lora_down.weight", ".lora_up.weight", ".dora_scale", ".alpha"), {}, "lycoris.kohya", "locon"),
    ((".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".alpha"), {}, "lycoris.kohya", "loha"),
    ((".lokr_w1", ".lokr_w2_a", ".lokr_w2_b", ".alpha"), {"ss_network_module": "networks.lora"}, "lycoris.kohya",
     "lokr"),
    ((".weight", ".on_input"), {}, "lycoris.kohya", "ia3"),
])
def test_a_files_kind_is_read_from_its_tensor_names(suffixes, metadata, module, algo):
    keys = [NAME + suffix for suffix in suffixes]
    assert file_network_module(keys, metadata) == module
    if algo is not None:
        assert file_lycoris_algo(keys) == algo


def test_a_plain_lora_file_on_layers_only_lycoris_trains_is_lycoris_locon():
    keys = [f"{NAME}.lora_down.weight", "lora_unet_conv_in.lora_down.weight", "lora_unet_conv_in.lora_up.weight"]
    assert file_network_module(keys, {}) == "lycoris.kohya" and file_lycoris_algo(keys) == "locon"
    assert file_network_module(["lora_unet_time_embedding_linear_1.lora_down.weight"], {}) == "lycoris.kohya"


@pytest.mark.parametrize("keys, words", [
    ([], "holds no tensors"),
    (["lycoris_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "'lycoris_' names"),
    (["unet.down_blocks.0.attentions.0.proj_in.lora_A.weight"], "diffusers/PEFT"),
    (["model.diffusion_model.input_blocks.0.0.weight"], "full Stable Diffusion checkpoint"),
])
def test_a_file_of_an_unknown_kind_is_refused_naming_what_was_found(keys, words):
    with pytest.raises(UserFacingError, match=words):
        file_network_module(keys, {})


def write_loha_file(path: Path) -> Path:
    tensors = {f"{NAME}.{name}": numpy.ones((2, 2), dtype=numpy.float32)
               for name in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")}
    tensors[f"{NAME}.alpha"] = numpy.array(2.0, dtype=numpy.float32)
    save_file(tensors, str(path), {"ss_network_module": "lycoris.kohya"})
    return path


def test_a_file_to_continue_from_must_be_of_the_type_being_trained(tmp_path: Path, demo):
    loha = write_loha_file(tmp_path / "style.safetensors")
    keys, metadata = read_file_keys(loha)
    assert metadata == {"ss_network_module": "lycoris.kohya"} and len(keys) == 5
    # a real SD1.5-layout model: the file's family is checked against the model's before its type
    args = TrainArgs(pretrained_model_name_or_path=str(demo.model), train_data_dir="i", output_dir="o",
                     network_weights=str(loha))
    with pytest.raises(UserFacingError, match="style.safetensors, is a LoHa network but this training is set up "
                                              "for LoRA; choose LoHa"):
        validate_args(args)
    args.network_module, args.network_args = "lycoris.kohya", ["algo=lokr"]
    with pytest.raises(UserFacingError, match="set up for LoKr"):
        validate_args(args)
    args.network_args = ["algo=loha"]
    validate_args(args)
    args.network_module, args.network_args, args.dim_from_weights = "networks.lora", [], True
    validate_args(args)  # the file's own type and shape are taken
