"""LoRANetwork behaviour on the tiny SD1.5-layout model: init, forward math, hooks, optimizer groups, loading."""

import copy

import pytest
import torch

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.saving import save_lora
from test_lora_fixtures import randomize, tiny_text_encoder, tiny_unet, token_ids, unet_inputs



@pytest.fixture(scope="module")
def models():
    return tiny_text_encoder(), tiny_unet()


def test_a_fresh_network_changes_nothing(models):
    text_encoder, unet = models
    network = LoRANetwork(text_encoder, unet, dim=4, alpha=1.0, conv_dim=4)
    for lora in network.loras:
        assert torch.count_nonzero(lora.lora_up.weight) == 0
        assert torch.count_nonzero(lora.lora_down.weight) > 0
        assert lora.alpha.shape == ()
    inputs = unet_inputs()
    with torch.no_grad():
        before = unet(*inputs).sample
        network.apply_to()
        during = unet(*inputs).sample
        network.restore()
    assert torch.equal(before, during)


def test_output_is_original_plus_scaled_low_rank_update(models):
    text_encoder, unet = models
    network = LoRANetwork(text_encoder, unet, dim=4, alpha=2.0, multiplier=0.5, train_unet=False)
    randomize(network)
    q_proj = text_encoder.get_submodule("encoder.layers.0.self_attn.q_proj")
    lora = network.get_submodule("lora_te_text_model_encoder_layers_0_self_attn_q_proj")
    x = torch.randn(3, 32)
    expected = q_proj(x) + x @ lora.lora_down.weight.T @ lora.lora_up.weight.T * 0.5 * (2.0 / 4)
    network.apply_to()
    try:
        torch.testing.assert_close(q_proj(x), expected)
        network.set_multiplier(0.0)
        assert lora.multiplier == 0.0
        torch.testing.assert_close(q_proj(x), x @ q_proj.weight.T + q_proj.bias)
    finally:
        network.restore()


def test_alpha_none_or_zero_means_scale_one(models):
    text_encoder, unet = models
    for alpha in (None, 0):
        network = LoRANetwork(text_encoder, unet, dim=8, alpha=alpha, train_unet=False)
        assert all(float(lora.alpha) == 8.0 for lora in network.loras)


def test_conv_alpha_defaults_to_one_as_sd_scripts(models):
    text_encoder, unet = models
    network = LoRANetwork(text_encoder, unet, dim=4, alpha=4.0, conv_dim=8, train_text_encoder=False)
    conv1 = network.get_submodule("lora_unet_down_blocks_0_resnets_0_conv1")
    assert conv1.rank == 8 and float(conv1.alpha) == 1.0


def test_hooks_leave_the_base_model_tree_and_weights_untouched(models):
    text_encoder, unet = models
    keys_before = list(unet.state_dict())
    modules_before = [name for name, _ in unet.named_modules()]
    network = LoRANetwork(text_encoder, unet, conv_dim=4)
    network.apply_to()
    network.apply_to()  # applying twice must not add the LoRA twice
    try:
        assert list(unet.state_dict()) == keys_before
        assert [name for name, _ in unet.named_modules()] == modules_before
        assert len(network.hooks) == len(network.loras)
        assert not any(name.startswith("lora_") for name in unet.state_dict())
    finally:
        network.restore()
    assert all(not module._forward_hooks for module in unet.modules())


def test_only_lora_weights_get_gradients(models):
    text_encoder, unet = models
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    network = LoRANetwork(text_encoder, unet, conv_dim=4)
    randomize(network)
    network.apply_to()
    try:
        latents, timesteps, _ = unet_inputs()
        context = text_encoder(token_ids()).last_hidden_state
        unet(latents, timesteps, context).sample.square().mean().backward()
    finally:
        network.restore()
    assert all(parameter.grad is not None for parameter in network.parameters())
    assert all(parameter.grad is None for parameter in unet.parameters())


def test_optimizer_groups_text_encoder_first_with_fallback_and_zero(models):
    text_encoder, unet = models
    network = LoRANetwork(text_encoder, unet)
    groups = network.prepare_optimizer_params(text_encoder_lr=5e-5, unet_lr=None, default_lr=1e-4)
    assert [group["lr"] for group in groups] == [5e-5, 1e-4]
    te_params = {id(p) for lora in network.text_encoder_loras for p in lora.parameters()}
    assert {id(p) for p in groups[0]["params"]} == te_params
    assert sum(len(group["params"]) for group in groups) == len(list(network.parameters()))

    groups = network.prepare_optimizer_params(text_encoder_lr=0, unet_lr=2e-4, default_lr=1e-4)
    assert [group["lr"] for group in groups] == [2e-4]
    assert all(not p.requires_grad for lora in network.text_encoder_loras for p in lora.parameters())


def test_unet_only_and_text_encoder_only(models):
    text_encoder, unet = models
    unet_only = LoRANetwork(text_encoder, unet, train_text_encoder=False)
    assert not unet_only.text_encoder_loras and len(unet_only.unet_loras) == 192
    assert all(key.startswith("lora_unet_") for key in unet_only.state_dict())
    assert len(unet_only.prepare_optimizer_params(1e-4, 1e-4, 1e-4)) == 1
    text_only = LoRANetwork(text_encoder, unet, train_unet=False)
    assert len(text_only.text_encoder_loras) == 12 and not text_only.unet_loras


def test_weights_survive_a_file_round_trip_even_in_fp16(models, tmp_path):
    text_encoder, unet = models
    source = LoRANetwork(text_encoder, unet, dim=4, alpha=2.0, conv_dim=4, conv_alpha=3.0)
    randomize(source)
    path = save_lora(source.state_dict(), tmp_path / "a.safetensors", save_precision="fp16")
    target = LoRANetwork(text_encoder, unet, dim=4, alpha=1.0, conv_dim=4, conv_alpha=1.0)
    target.load_weights(path)
    for key, tensor in source.state_dict().items():
        loaded = target.state_dict()[key]
        assert loaded.dtype == torch.float32  # the network stays fp32 whatever the file's precision
        torch.testing.assert_close(loaded, tensor.half().float())


def test_a_file_without_alpha_means_alpha_equals_rank(models):
    text_encoder, unet = models
    source = LoRANetwork(text_encoder, unet, dim=4, train_unet=False)
    randomize(source)
    without_alpha = {key: value for key, value in source.state_dict().items() if not key.endswith(".alpha")}
    target = LoRANetwork(text_encoder, unet, dim=4, alpha=1.0, train_unet=False)
    target.load_weights(without_alpha)
    assert all(float(lora.alpha) == 4.0 for lora in target.loras)


def test_the_update_follows_the_alpha_of_a_loaded_file(models):
    """The forward pass keeps alpha as a Python number; loading a file with another alpha (continuing from a LoRA
    made with other settings) must change it, as the file's alpha is what A1111 and ComfyUI apply."""
    text_encoder, unet = models
    source = LoRANetwork(text_encoder, unet, dim=4, alpha=3.0, train_unet=False)
    randomize(source)
    target = LoRANetwork(text_encoder, unet, dim=4, alpha=1.0, train_unet=False)
    target.load_weights(source.state_dict())
    q_proj = text_encoder.get_submodule("encoder.layers.0.self_attn.q_proj")
    lora = target.get_submodule("lora_te_text_model_encoder_layers_0_self_attn_q_proj")
    x = torch.randn(3, 32)
    expected = q_proj(x) + x @ lora.lora_down.weight.T @ lora.lora_up.weight.T * (3.0 / 4)
    target.apply_to()
    try:
        torch.testing.assert_close(q_proj(x), expected)
    finally:
        target.restore()


def test_a_one_element_alpha_loads_as_a_scalar(models):
    """LyCORIS' extraction tool writes alpha as a 1-element tensor; kohya files hold a 0-dim one."""
    text_encoder, unet = models
    state_dict = LoRANetwork(text_encoder, unet, dim=4, train_unet=False).state_dict()
    state_dict = {key: value.reshape(1) if key.endswith(".alpha") else value for key, value in state_dict.items()}
    state_dict["lora_te_text_model_encoder_layers_0_mlp_fc1.alpha"] = torch.tensor([3.0])
    network = LoRANetwork(text_encoder, unet, dim=4, train_unet=False)
    network.load_weights(state_dict)
    assert network.get_submodule("lora_te_text_model_encoder_layers_0_mlp_fc1").alpha.shape == ()
    assert float(network.get_submodule("lora_te_text_model_encoder_layers_0_mlp_fc1").alpha) == 3.0


def test_loading_refuses_other_ranks_and_foreign_files(models):
    text_encoder, unet = models
    rank_8 = LoRANetwork(text_encoder, unet, dim=8, train_unet=False).state_dict()
    with pytest.raises(UserFacingError, match="network dim"):
        LoRANetwork(text_encoder, unet, dim=4, train_unet=False).load_weights(rank_8)
    with pytest.raises(UserFacingError, match="None of the LoRA file"):
        LoRANetwork(text_encoder, unet, dim=4, train_text_encoder=False).load_weights(rank_8)


def test_from_weights_rebuilds_each_module_with_the_files_rank(models, tmp_path):
    text_encoder, unet = models
    source = LoRANetwork(text_encoder, unet, dim=8, alpha=4.0, conv_dim=2, conv_alpha=1.0, train_text_encoder=False)
    randomize(source)
    path = save_lora(source.state_dict(), tmp_path / "locon.safetensors")
    rebuilt = LoRANetwork.from_weights(text_encoder, unet, path, multiplier=0.7)
    assert [lora.lora_name for lora in rebuilt.loras] == [lora.lora_name for lora in source.loras]
    assert rebuilt.get_submodule("lora_unet_down_blocks_0_resnets_0_conv1").rank == 2
    assert rebuilt.get_submodule("lora_unet_mid_block_attentions_0_proj_in").rank == 8
    assert all(lora.multiplier == 0.7 for lora in rebuilt.loras)
    for key, tensor in source.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], tensor)


def test_merging_gives_the_hooked_outputs(models):
    text_encoder, unet = copy.deepcopy(models[0]), copy.deepcopy(models[1])
    network = LoRANetwork(text_encoder, unet, dim=4, alpha=2.0, conv_dim=4, conv_alpha=2.0, multiplier=0.8)
    randomize(network)
    inputs, ids = unet_inputs(), token_ids()
    with torch.no_grad():
        network.apply_to()
        hooked_unet, hooked_text = unet(*inputs).sample, text_encoder(ids).last_hidden_state
        network.merge_to()
        assert not network.hooks
        merged_unet, merged_text = unet(*inputs).sample, text_encoder(ids).last_hidden_state
    torch.testing.assert_close(merged_unet, hooked_unet, atol=5e-4, rtol=1e-3)
    torch.testing.assert_close(merged_text, hooked_text, atol=5e-4, rtol=1e-3)


def test_lora_stays_fp32_on_a_bf16_base(models):
    text_encoder = copy.deepcopy(models[0])
    reference = LoRANetwork(text_encoder, models[1], dim=4, alpha=4.0, train_unet=False)
    randomize(reference)
    ids = token_ids()
    with torch.no_grad():
        reference.apply_to()
        fp32_output = text_encoder(ids).last_hidden_state
        reference.restore()
        text_encoder.to(torch.bfloat16)
        network = LoRANetwork(text_encoder, models[1], dim=4, alpha=4.0, train_unet=False)
        network.load_weights(reference.state_dict())
        network.apply_to()
        bf16_output = text_encoder(ids).last_hidden_state
        network.restore()
    assert all(parameter.dtype == torch.float32 for parameter in network.parameters())
    assert bf16_output.dtype == torch.bfloat16
    torch.testing.assert_close(bf16_output.float(), fp32_output, atol=0.1, rtol=0.05)


def test_under_autocast_the_update_takes_the_half_precision_input_as_it_is(models):
    """Autocast casts a Linear's input and weights to bf16 itself: the update's result is the very one it gives with
    the input first cast to float32 (as outside autocast), without copying every activation there and back."""
    text_encoder, unet = models
    network = LoRANetwork(text_encoder, unet, dim=4, alpha=2.0, train_unet=False)
    randomize(network)
    lora = network.text_encoder_loras[0]
    x = torch.randn(2, 77, lora.lora_down.in_features).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        as_given = lora.add_to_output(None, (x,), torch.zeros(2, 77, lora.lora_up.out_features, dtype=torch.bfloat16))
        through_float32 = lora(x.float())
    assert as_given.dtype == torch.bfloat16 and torch.equal(as_given, through_float32)
    outside = lora.add_to_output(None, (x,), torch.zeros(2, 77, lora.lora_up.out_features, dtype=torch.bfloat16))
    assert torch.equal(outside, lora(x.float()).to(torch.bfloat16))  # no autocast: the fp32 weights take fp32 input
