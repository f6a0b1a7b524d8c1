"""LycorisNetwork: key names from the format, round trips, the LoHa/LoKr formulas, agreement with LyCORIS' own
loader, continuing files LyCORIS made, and short trainings of every LyCORIS type on the demo model."""

from __future__ import annotations

import contextlib
import copy
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from lycoris.config import PRESET
from lycoris.kohya import LycorisNetworkKohya, create_network, create_network_from_weights
from safetensors.torch import load_file, save_file
from torch import nn

from network_tables import expected_keys
from sd_scripts.errors import UserFacingError
from sd_scripts.models import load_base_model
from sd_scripts.networks.base import NetworkSpec
from sd_scripts.networks.factory import network_from_file
from sd_scripts.networks.kinds import NETWORK_TYPES, parse_network_args
from sd_scripts.networks.lycoris_network import LycorisNetwork
from sd_scripts.saving import save_lora
from sd_scripts.saving.lora_file import load_lora_file
from sd_scripts.train import train
from test_lora_fixtures import tiny_text_encoder, tiny_unet, token_ids, unet_inputs
from test_lora_keys import SD15_TEXT, SD15_UNET, meta_models
from test_train_fixtures import EventLog, demo_args, one_repeat_images  # noqa: F401 (fixtures)


LYCORIS_METADATA = {"ss_network_module": "lycoris.kohya"}  # what sd-scripts writes for every LyCORIS type
LINEAR = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
CONV = "down_blocks.0.resnets.0.conv1"
PRESET_ATTRIBUTES = ("ENABLE_CONV", "UNET_TARGET_REPLACE_MODULE", "UNET_TARGET_REPLACE_NAME",
                     "TEXT_ENCODER_TARGET_REPLACE_MODULE", "TEXT_ENCODER_TARGET_REPLACE_NAME", "MODULE_ALGO_MAP",
                     "NAME_ALGO_MAP", "USE_FNMATCH", "TARGET_EXCLUDE_NAME")


class WithTextModel(nn.Module):
    """The text encoder as LyCORIS must see it to write `lora_te_text_model_...` under transformers 5."""

    def __init__(self, text_encoder: nn.Module) -> None:
        super().__init__()
        self.text_model = text_encoder


def spec(kind: str, *args: str, dim: int = 4, alpha: float | None = 1.0, **parts) -> NetworkSpec:
    network_type = NETWORK_TYPES[kind]
    options = parse_network_args(network_type.module, [f"algo={network_type.algo}", *args])
    return NetworkSpec(kind=network_type, dim=dim, alpha=alpha, options=options, **parts)


def fill(parameters, seed: int = 1, std: float = 0.05) -> None:
    """Add noise to every parameter: LyCORIS zero-initialises one factor of each layer, so a fresh network acts not."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in parameters:
            parameter.add_(torch.randn(parameter.shape, generator=generator) * std)


def outputs(text_encoder: nn.Module, unet: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The text encoder's and the U-Net's outputs for one fixed input each (one: a U-Net call costs on 2 cores)."""
    with torch.no_grad():
        return text_encoder(token_ids(batch=1)).last_hidden_state, unet(*unet_inputs(batch=1)).sample


def one_sentence(message: str) -> bool:
    return message.endswith(".") and ". " not in message


@pytest.fixture(scope="module")
def models():
    return tiny_text_encoder(), tiny_unet()


@pytest.fixture(scope="module")
def base(models):
    """The untouched tiny models' outputs, computed once."""
    return outputs(*models)


@contextlib.contextmanager
def lycoris_class_kept():
    """LyCORIS' class-level preset as it was afterwards: calling LyCORIS directly sets it, as sd-scripts does."""
    saved = {name: LycorisNetworkKohya.__dict__[name] for name in PRESET_ATTRIBUTES}
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(LycorisNetworkKohya, name, value)


@pytest.fixture
def lycoris_class_state():
    with lycoris_class_kept():
        yield


# --- key names and round trips -----------------------------------------------------------------------------------
KEY_CASES = [  # (type, network_args, algo, preset, dim, tucker, dora)
    ("LyCORIS LoCon", (), "locon", "full", 4, False, False),
    ("LoHa", (), "loha", "full", 4, False, False),
    ("LoKr", (), "lokr", "full", 4, False, False),
    ("IA3", (), "ia3", "full", 4, False, False),
    ("LyCORIS LoCon", ("dora_wd=True",), "locon", "full", 4, False, True),
    ("LoHa", ("dora_wd=True",), "loha", "full", 4, False, True),
    ("IA3", ("preset=ia3",), "ia3", "ia3", 4, False, False),
    ("LyCORIS LoCon", ("use_tucker=True",), "locon", "full", 4, True, False),
    ("LoHa", ("use_tucker=True",), "loha", "full", 4, True, False),
    ("LoKr", ("use_tucker=True",), "lokr", "full", 2, True, False),
]


@pytest.mark.parametrize("kind,args,algo,preset,dim,tucker,dora", KEY_CASES,
                         ids=[f"{case[0]}{''.join(case[1])}" for case in KEY_CASES])
def test_keys_are_lycoris_names_and_a_saved_file_comes_back_identical(
    models, tmp_path, kind, args, algo, preset, dim, tucker, dora
):
    text_encoder, unet = models
    network = LycorisNetwork.from_spec(text_encoder, unet, spec(kind, *args, dim=dim))
    fill(network.parameters())
    state = network.state_dict()
    assert set(state) == expected_keys(algo, preset, text_encoder, unet, rank=dim, conv_rank=dim, tucker=tucker,
                                       dora=dora)

    path = save_lora(state, tmp_path / "lycoris.safetensors", metadata=LYCORIS_METADATA)
    loaded = network_from_file(path, text_encoder, unet)
    assert isinstance(loaded, LycorisNetwork)
    again = loaded.state_dict()
    assert list(again) == list(state)
    for key, tensor in state.items():
        assert torch.equal(again[key], tensor), key


def test_the_full_preset_on_a_real_size_sd15_has_its_354_layers():
    text_encoder, unet = meta_models(SD15_UNET, SD15_TEXT)
    network = LycorisNetwork.from_spec(text_encoder, unet, spec("LoHa"))
    assert set(network.state_dict()) == expected_keys("loha", "full", text_encoder, unet, rank=4, conv_rank=4)
    # kohya's 72 text encoder and 278 conv-extended U-Net layers, plus conv_in, conv_out and the 2 time embeddings
    assert (len(network.text_encoder_loras), len(network.unet_loras)) == (72, 282)


def test_building_a_network_leaves_lycoris_class_settings_as_they_were(models):
    text_encoder, unet = models
    before = {name: copy.deepcopy(getattr(LycorisNetworkKohya, name)) for name in PRESET_ATTRIBUTES}
    ia3 = LycorisNetwork.from_spec(text_encoder, unet, spec("IA3", "preset=ia3"))
    full = LycorisNetwork.from_spec(text_encoder, unet, spec("IA3"))
    assert {name: getattr(LycorisNetworkKohya, name) for name in PRESET_ATTRIBUTES} == before
    assert len(ia3.loras) < len(full.loras)
    assert "lora_unet_conv_in" in {lora.lora_name for lora in full.loras}


# --- the published formulas --------------------------------------------------------------------------------------
def loha_difference(state: dict[str, torch.Tensor], name: str, shape: torch.Size) -> torch.Tensor:
    """LoHa: (w1a @ w1b) * (w2a @ w2b) * alpha / rank, in the layer's weight shape."""
    w1 = state[f"{name}.hada_w1_a"] @ state[f"{name}.hada_w1_b"]
    w2 = state[f"{name}.hada_w2_a"] @ state[f"{name}.hada_w2_b"]
    rank = state[f"{name}.hada_w1_b"].shape[0]
    return (w1 * w2).reshape(shape) * state[f"{name}.alpha"] / rank


def lokr_difference(state: dict[str, torch.Tensor], name: str, shape: torch.Size) -> torch.Tensor:
    """LoKr: kron(w1, w2) * alpha / rank with w1 = w1_a @ w1_b and w2 = w2_a @ w2_b, in the layer's weight shape."""
    w1 = state[f"{name}.lokr_w1_a"] @ state[f"{name}.lokr_w1_b"]
    w2 = state[f"{name}.lokr_w2_a"] @ state[f"{name}.lokr_w2_b"]
    rank = state[f"{name}.lokr_w1_a"].shape[1]
    return torch.kron(w1, w2).reshape(shape) * state[f"{name}.alpha"] / rank


@pytest.mark.parametrize("kind,args,dim,formula", [
    ("LoHa", ("conv_dim=3", "conv_alpha=1.5"), 2, loha_difference),
    ("LoKr", ("decompose_both=True", "conv_dim=1", "conv_alpha=0.25"), 1, lokr_difference),
])
def test_applied_and_merged_layers_follow_the_published_formula(kind, args, dim, formula):
    text_encoder, unet = tiny_text_encoder(), tiny_unet()  # merging changes them
    network = LycorisNetwork.from_spec(text_encoder, unet, spec(kind, *args, dim=dim, alpha=0.5, multiplier=0.7))
    fill(network.parameters(), std=0.3)
    state = network.state_dict()
    layers = {path: unet.get_submodule(path) for path in (LINEAR, CONV)}
    before = {path: layer.weight.detach().clone() for path, layer in layers.items()}
    inputs = {LINEAR: torch.randn(2, 5, 32), CONV: torch.randn(2, 32, 6, 6)}

    network.apply_to()
    applied = {path: layers[path](inputs[path]).detach() for path in layers}
    network.merge_to()
    for path, layer in layers.items():
        expected = formula(state, f"lora_unet_{path.replace('.', '_')}", layer.weight.shape) * 0.7
        torch.testing.assert_close(layer.weight - before[path], expected, atol=1e-6, rtol=1e-4)
        with torch.no_grad():
            if isinstance(layer, nn.Linear):
                by_formula = F.linear(inputs[path], before[path] + expected, layer.bias)
            else:
                by_formula = F.conv2d(inputs[path], before[path] + expected, layer.bias, padding=layer.padding)
            torch.testing.assert_close(applied[path], by_formula, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(layer(inputs[path]), by_formula, atol=1e-5, rtol=1e-4)


# --- LyCORIS' own code as the independent reader and writer ------------------------------------------------------
@pytest.mark.parametrize("kind,args", [
    ("LyCORIS LoCon", ("use_tucker=True", "dora_wd=True")),
    ("LoHa", ()),
    ("LoKr", ("preset=attn-mlp",)),  # LyCORIS 4.1.3's own loader misreads LoKr convolutions and cannot read IA3
])
def test_lycoris_own_loader_computes_what_we_compute(models, base, tmp_path, lycoris_class_state, kind, args):
    text_encoder, unet = models
    network = LycorisNetwork.from_spec(text_encoder, unet, spec(kind, *args, dim=2, alpha=1.0, multiplier=0.8))
    fill(network.parameters())
    path = save_lora(network.state_dict(), tmp_path / "ours.safetensors", metadata=LYCORIS_METADATA)
    network.apply_to()
    ours = outputs(text_encoder, unet)
    network.restore()

    their_text_encoder, their_unet = copy.deepcopy(text_encoder), copy.deepcopy(unet)
    LycorisNetworkKohya.apply_preset(PRESET["attn-mlp"])  # "full" stops LyCORIS 4.1.3 with a duplicated name
    theirs_network, _ = create_network_from_weights(0.8, None, None, WithTextModel(their_text_encoder), their_unet,
                                                    weights_sd=load_file(path))
    assert len(theirs_network.unet_loras) == len(network.unet_loras)
    assert len(theirs_network.text_encoder_loras) == len(network.text_encoder_loras)
    theirs_network.apply_to(WithTextModel(their_text_encoder), their_unet, apply_text_encoder=True, apply_unet=True)
    theirs = outputs(their_text_encoder, their_unet)
    for mine, their, untouched in zip(ours, theirs, base):
        assert not torch.allclose(mine, untouched, atol=1e-4)
        torch.testing.assert_close(mine, their, atol=1e-5, rtol=1e-5)


def lycoris_made_file(text_encoder, unet, path, **network_args):
    """A file written by lycoris.kohya itself, as sd-scripts runs it, with random non-zero weights.

    Returns LyCORIS' network (restored) and the file's tensors.
    """
    network = create_network(1.0, 4, 2.0, None, WithTextModel(text_encoder), unet, **network_args)
    network.apply_to(WithTextModel(text_encoder), unet, apply_text_encoder=True, apply_unet=True)
    fill(network.parameters())
    network.requires_grad_(False)
    network.save_weights(str(path), None, dict(LYCORIS_METADATA, ss_network_args=json.dumps(network_args)))
    network.restore()
    return network, load_file(str(path))


# IA3 on the layers LyCORIS' "ia3" preset names, as a preset file with patterns LyCORIS 4.1.3 matches
IA3_PRESET_FILE = """use_fnmatch = true
enable_conv = false
unet_target_module = []
unet_target_name = ["*.to_k", "*.to_v", "*.ff.net.2"]
text_encoder_target_module = []
text_encoder_target_name = ["*.k_proj", "*.v_proj", "*.mlp.fc2"]
[name_algo_map."*.ff.net.2"]
train_on_input = true
[name_algo_map."*.mlp.fc2"]
train_on_input = true
"""


@pytest.mark.parametrize("case", ["lokr-conv", "ia3-input-side"])
def test_files_lycoris_made_load_and_compute_as_lycoris_does(models, tmp_path, lycoris_class_state, case):
    text_encoder, unet = copy.deepcopy(models[0]), copy.deepcopy(models[1])
    path = tmp_path / "made_by_lycoris.safetensors"
    if case == "lokr-conv":  # the layers LyCORIS' own loader misreads
        made, tensors = lycoris_made_file(text_encoder, unet, path, algo="lokr", preset="unet-convblock-only",
                                          conv_dim="2", conv_alpha="1", factor="4")
        assert any(key.endswith(".lokr_w2_a") for key in tensors) and "lora_unet_conv_in.lokr_w1" in tensors
    else:  # input-side layers, whose on_input flag LyCORIS' own loader drops
        (tmp_path / "ia3.toml").write_text(IA3_PRESET_FILE, encoding="utf-8")
        made, tensors = lycoris_made_file(text_encoder, unet, path, algo="ia3", preset=str(tmp_path / "ia3.toml"))
        assert int(tensors["lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2.on_input"]) == 1
        ours = LycorisNetwork.from_spec(text_encoder, unet, spec("IA3", "preset=ia3")).state_dict()
        assert {key: tensor.shape for key, tensor in ours.items()} == {k: t.shape for k, t in tensors.items()}
    network = network_from_file(path, text_encoder, unet)
    assert isinstance(network, LycorisNetwork)
    loaded = network.state_dict()
    assert set(loaded) == set(tensors) and all(torch.equal(tensor, tensors[key]) for key, tensor in loaded.items())

    made.apply_to(WithTextModel(text_encoder), unet, apply_text_encoder=True, apply_unet=True)
    expected = outputs(text_encoder, unet)
    made.restore()
    network.apply_to()
    for mine, theirs in zip(outputs(text_encoder, unet), expected):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    network.restore()


@pytest.mark.parametrize("tensors,found", [
    ({"lycoris_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 32, 1, 1),
      "lycoris_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 2, 1, 1)}, "'lycoris_' names"),
    ({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(2, 32, 1, 1),
      "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight": torch.zeros(32, 2, 1, 1)}, "lora_A/lora_B"),
    ({}, "holds no tensors"),
], ids=["lycoris-prefix", "peft", "empty"])
def test_files_that_are_not_kohya_lycoris_are_refused_in_one_sentence(models, tmp_path, tensors, found):
    path = tmp_path / "other.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(UserFacingError) as refused:
        network_from_file(path, *models)
    assert found in str(refused.value) and one_sentence(str(refused.value))


# --- applying, multiplier, dropout, optimizer groups, loading ----------------------------------------------------
@pytest.mark.parametrize("kind", ["LoHa", "IA3"])  # LoCon, LoHa and LoKr share LyCORIS' apply/restore, IA3 has its own
def test_restore_gives_back_the_base_model_and_multiplier_zero_acts_as_none(models, base, kind):
    text_encoder, unet = models
    network = LycorisNetwork.from_spec(text_encoder, unet, spec(kind))
    fill(network.parameters())
    network.apply_to()
    network.apply_to()  # applying twice must not apply twice
    network.set_multiplier(0.0)
    assert all(lora.multiplier == 0.0 for lora in network.loras)
    for off, untouched in zip(outputs(text_encoder, unet), base):
        torch.testing.assert_close(off, untouched, atol=1e-6, rtol=0)
    network.restore()
    for after, untouched in zip(outputs(text_encoder, unet), base):
        assert torch.equal(after, untouched)
    assert not any("forward" in vars(lora.org_module[0]) for lora in network.loras)


def test_the_multiplier_scales_a_layer_update(models):
    text_encoder, unet = models
    network = LycorisNetwork.from_spec(text_encoder, unet, spec("LoHa", train_text_encoder=False))
    fill(network.parameters(), std=0.3)
    layer, x = unet.get_submodule(LINEAR), torch.randn(3, 32)
    with torch.no_grad():
        base = layer(x)
        network.apply_to()
        full = layer(x)
        network.set_multiplier(0.25)
        quarter = layer(x)
        network.restore()
    torch.testing.assert_close(quarter, base + 0.25 * (full - base), atol=1e-6, rtol=1e-5)


def test_dropouts_reach_each_layer_and_act_only_in_training(models):
    text_encoder, unet = models
    network = LycorisNetwork.from_spec(
        text_encoder, unet, spec("LyCORIS LoCon", "rank_dropout=0.5", "module_dropout=0.3")
    )
    quiet = LycorisNetwork.from_spec(text_encoder, unet, spec("LyCORIS LoCon"))
    fill(network.parameters())
    quiet.load_weights(network.state_dict())
    lora = network.get_submodule(f"lora_unet_{LINEAR.replace('.', '_')}")
    assert (lora.rank_dropout, lora.module_dropout) == (0.5, 0.3)
    layer, x = unet.get_submodule(LINEAR), torch.randn(3, 32)
    torch.manual_seed(0)
    with torch.no_grad():
        quiet.apply_to()
        plain = layer(x)
        quiet.restore()
        network.apply_to()
        network.train()
        trained = [layer(x) for _ in range(6)]
        network.eval()
        evaluated = [layer(x) for _ in range(3)]
        network.restore()
    assert any(not torch.allclose(output, plain) for output in trained)
    assert all(torch.equal(output, plain) for output in evaluated)


def test_lycoris_stays_quiet(models, capfd, caplog):
    text_encoder, unet = models
    with caplog.at_level(logging.INFO):
        network = LycorisNetwork.from_spec(text_encoder, unet, spec("LoHa", "rank_dropout=0.2"))
    assert all(lora.rank_dropout == 0.2 for lora in network.loras)
    assert capfd.readouterr().out == ""  # no LyCORIS INFO lines or prints on the console
    assert not [record for record in caplog.records if record.name.startswith("LyCORIS") and
                record.levelno < logging.WARNING]


def test_optimizer_groups_put_the_text_encoder_first_and_leave_out_a_zero_rate(models):
    text_encoder, unet = models
    network = LycorisNetwork.from_spec(text_encoder, unet, spec("LoHa", "dora_wd=True"))
    groups = network.prepare_optimizer_params(None, 2e-4, 1e-3)
    assert [group["lr"] for group in groups] == [1e-3, 2e-4]
    assert [len(group["params"]) for group in groups] == [5 * len(network.text_encoder_loras),
                                                          5 * len(network.unet_loras)]
    groups = network.prepare_optimizer_params(0, None, 1e-3)
    assert len(groups) == 1 and groups[0]["lr"] == 1e-3
    assert not any(p.requires_grad for lora in network.text_encoder_loras for p in lora.parameters())
    assert all(p.requires_grad for p in groups[0]["params"])


def test_load_weights_loads_matching_layers_and_refuses_what_does_not_fit(models):
    text_encoder, unet = models
    source = LycorisNetwork.from_spec(text_encoder, unet, spec("LoHa", dim=4))
    fill(source.parameters())
    unet_only = LycorisNetwork.from_spec(text_encoder, unet, spec("LoHa", dim=4, train_text_encoder=False))
    source_state = source.state_dict()
    unet_only.load_weights(source_state)  # the text encoder's layers are not this network's: ignored
    assert all(torch.equal(tensor, source_state[key]) for key, tensor in unet_only.state_dict().items())

    for other, says in ((spec("LoHa", dim=2), "shape"), (spec("LyCORIS LoCon", dim=4), "hada_w1_a"),
                        (spec("LoHa", dim=4, alpha=4.0), "alpha")):
        network = LycorisNetwork.from_spec(text_encoder, unet, other)
        with pytest.raises(UserFacingError) as refused:
            network.load_weights(source_state)
        assert says in str(refused.value) and one_sentence(str(refused.value))


# --- training on the demo model ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_model(demo):
    return load_base_model(str(demo.model))


TRAINING_CASES = [  # (network_args, algo, tucker, dora); LoCon runs with DoRA: one run, both covered
    (["algo=locon", "conv_dim=4", "conv_alpha=2", "dora_wd=True", "rank_dropout=0.1"], "locon", False, True),
    (["algo=loha", "conv_dim=4", "conv_alpha=2", "use_tucker=True"], "loha", True, False),
    (["algo=lokr", "conv_dim=4", "conv_alpha=2", "module_dropout=0.1"], "lokr", False, False),
    (["algo=ia3"], "ia3", False, False),
]


@pytest.mark.parametrize("network_args,algo,tucker,dora", TRAINING_CASES,
                         ids=["locon-dora", "loha-tucker", "lokr", "ia3"])
def test_training_writes_a_lycoris_file(demo, demo_model, one_repeat_images, tmp_path, network_args, algo, tucker,
                                        dora):
    args = demo_args(demo, one_repeat_images, tmp_path, network_module="lycoris.kohya", network_args=network_args,
                     network_dim=4, network_alpha=2.0, max_train_steps=2)
    result = train(args, EventLog())
    assert result.ok, result.message
    tensors, metadata = load_lora_file(result.lora_path)
    assert metadata["ss_network_module"] == "lycoris.kohya"
    assert json.loads(metadata["ss_network_args"])["algo"] == algo
    assert set(tensors) == expected_keys(algo, "full", demo_model.text_encoder, demo_model.unet, rank=4, conv_rank=4,
                                         tucker=tucker, dora=dora)


@pytest.fixture(scope="module")
def lycoris_loha(demo_model, tmp_path_factory):
    """A LoHa that lycoris.kohya made on the demo model (attn-mlp: its "full" stops with a duplicated name)."""
    path = tmp_path_factory.mktemp("lycoris") / "made_by_lycoris.safetensors"
    text_encoder, unet = copy.deepcopy(demo_model.text_encoder), copy.deepcopy(demo_model.unet)
    with lycoris_class_kept():
        _, tensors = lycoris_made_file(text_encoder, unet, path, algo="loha", preset="attn-mlp")
    return path, tensors


@pytest.mark.parametrize("dim_from_weights", [True, False])
def test_training_continues_a_file_lycoris_made(demo, demo_model, one_repeat_images, lycoris_loha, tmp_path,
                                                dim_from_weights):
    path, tensors = lycoris_loha
    network = network_from_file(path, demo_model.text_encoder, demo_model.unet)
    assert isinstance(network, LycorisNetwork) and set(network.state_dict()) == set(tensors)
    args = demo_args(demo, one_repeat_images, tmp_path, network_module="lycoris.kohya",
                     network_args=["algo=loha", "preset=attn-mlp"], network_dim=4, network_alpha=2.0,
                     network_weights=str(path), dim_from_weights=dim_from_weights, max_train_steps=2)
    result = train(args, EventLog())
    assert result.ok, result.message
    continued, _ = load_lora_file(result.lora_path)
    assert set(continued) == set(tensors)
    changed = [key for key in tensors if not torch.equal(continued[key], tensors[key])]
    assert changed and all(key.endswith(("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")) for key in changed)
