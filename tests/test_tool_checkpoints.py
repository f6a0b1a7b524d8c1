"""The tools that read or write checkpoints, on tiny SD1.5-layout models: a LoRA merged into a model (checked per
layer against W + ratio * scale * up @ down and against diffusers' own fused LoRA), extraction of a known low-rank
difference, a LoHa merged by the LyCORIS-merge command line (checked against the LoHa formula), and the refusals.
On the trained demo model: a LoHa merged in against lycoris-lora's own modules applied, and a resized LoRA loaded by
diffusers against the unresized one (the pipeline's image moves less than the share the resize discarded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from lycoris.wrapper import create_lycoris_from_weights
from safetensors.torch import load_file

from sd_scripts.errors import UserFacingError
from sd_scripts.models import load_base_model
from sd_scripts.networks.base import NetworkSpec
from sd_scripts.networks.kinds import NETWORK_TYPES, parse_network_args
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.networks.lycoris_network import LycorisNetwork
from sd_scripts.saving import load_lora_file, save_lora
from sd_scripts.tools import merge_lycoris
from sd_scripts.tools.extract_lora import ExtractTarget, extract_loras
from sd_scripts.tools.merge_lora import merge_into_checkpoint
from sd_scripts.tools.resize_lora import ResizeTarget, resize_lora
from test_lora_diffusers import lora_layer_count
from test_lora_fixtures import randomize, token_ids, unet_inputs
from tool_fixtures import deltas, one_thread, tiny_checkpoint  # noqa: F401  (autouse)

RATIO = 0.7


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("base") / "base.safetensors")


def lora_on(base: Path, path: Path, *, conv_dim: int | None = 2, text_encoder: bool = True, seed: int = 1,
            metadata: dict | None = None) -> tuple[Path, LoRANetwork]:
    model = load_base_model(base)
    network = LoRANetwork(model.text_encoder, model.unet, dim=4, alpha=2.0, conv_dim=conv_dim, conv_alpha=1.0,
                          train_text_encoder=text_encoder)
    randomize(network, seed=seed, std=0.2)
    return save_lora(network.state_dict(), path, metadata=metadata or {"ss_base_model_version": "sd_v1"}), network


def layer_weights(path: Path) -> dict[str, torch.Tensor]:
    """{kohya layer name: weight} of every layer a LoRA/LoCon can target in the model at `path`."""
    model = load_base_model(path)
    network = LoRANetwork(model.text_encoder, model.unet, dim=1, conv_dim=1)
    return {name: module.weight.detach().clone() for name, module in network.targets.items()}


def pipeline_of(model) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def test_a_lora_merged_into_a_model_adds_ratio_times_its_difference_and_matches_diffusers(base, tmp_path):
    lora, _ = lora_on(base, tmp_path / "lora.safetensors")
    merged = merge_into_checkpoint(base, [lora], [RATIO], tmp_path / "merged.safetensors")
    before, after, lora_deltas = layer_weights(base), layer_weights(merged), deltas(lora)
    assert len(lora_deltas) > 250  # U-Net, text encoder and conv layers
    for name, weight in before.items():
        expected = weight + (RATIO * lora_deltas[name].reshape(weight.shape) if name in lora_deltas else 0)
        torch.testing.assert_close(after[name], expected, atol=1e-6, rtol=1e-5)

    # diffusers as the independent reader: the LoRA fused at the same scale computes what the merged model computes
    pipeline = pipeline_of(load_base_model(base))
    pipeline.load_lora_weights(str(lora))
    pipeline.fuse_lora(lora_scale=RATIO)
    ours = load_base_model(merged)
    latents, timesteps, context = unet_inputs()
    ids = token_ids()
    with torch.no_grad():
        torch.testing.assert_close(ours.unet(latents, timesteps, context).sample,
                                   pipeline.unet(latents, timesteps, context).sample, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours.text_encoder(ids).last_hidden_state,
                                   pipeline.text_encoder(ids).last_hidden_state, atol=1e-4, rtol=1e-4)
    with pytest.raises(UserFacingError, match="already exists"):
        merge_into_checkpoint(base, [lora], [RATIO], merged)


def test_files_that_do_not_fit_the_model_are_refused_in_one_sentence(base, tmp_path):
    sd2, _ = lora_on(base, tmp_path / "sd2.safetensors", metadata={"ss_base_model_version": "sd_v2"})
    with pytest.raises(UserFacingError, match="made for SD2 models but this model is SD1"):
        merge_into_checkpoint(base, [sd2], [1.0], tmp_path / "a.safetensors")
    with pytest.raises(UserFacingError, match="base.safetensors is not a LoRA or LyCORIS file: it is a full Stable"):
        merge_into_checkpoint(base, [base], [1.0], tmp_path / "b.safetensors")
    foreign, _ = load_lora_file(sd2)  # real layers, and one of another tool's naming
    foreign |= {"lora_unet_some_other_layer.lora_down.weight": torch.zeros(2, 8),
                "lora_unet_some_other_layer.lora_up.weight": torch.zeros(8, 2)}
    save_lora(foreign, tmp_path / "foreign.safetensors")
    with pytest.raises(UserFacingError, match=r"1 of the \d+ layers of foreign.safetensors \(such as "
                                              "lora_unet_some_other_layer\) match no layer of this model"):
        merge_into_checkpoint(base, [tmp_path / "foreign.safetensors"], [1.0], tmp_path / "c.safetensors")
    assert not any(tmp_path.glob("[abc].safetensors"))


def test_extraction_at_the_loras_rank_recovers_the_merged_difference(base, tmp_path):
    lora, _ = lora_on(base, tmp_path / "lora.safetensors", text_encoder=False)  # the text encoder stays unchanged
    tuned = merge_into_checkpoint(base, [lora], [1.0], tmp_path / "tuned.safetensors")
    (extracted,) = extract_loras(base, tuned, [(tmp_path / "x.safetensors", ExtractTarget(4, 2))],
                                 clamp_quantile=1.0)
    expected, found = deltas(lora), deltas(extracted)
    assert not any(name.startswith("lora_te") for name in found)  # skipped: it did not change
    for name, delta in expected.items():
        torch.testing.assert_close(found[name], delta, atol=1e-5, rtol=1e-3)
    assert all(found[name].abs().max() < 1e-5 for name in found.keys() - expected.keys())  # unchanged layers
    _, metadata = load_lora_file(extracted)
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "4.0"
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "2"}
    assert metadata["ss_base_model_version"] == "sd_v1" and metadata["ss_v2"] == "False"


def loha_difference(state: dict[str, torch.Tensor], name: str, shape: torch.Size) -> torch.Tensor:
    """The published LoHa formula: (w1a @ w1b) * (w2a @ w2b) * alpha / rank."""
    w1 = state[f"{name}.hada_w1_a"] @ state[f"{name}.hada_w1_b"]
    w2 = state[f"{name}.hada_w2_a"] @ state[f"{name}.hada_w2_b"]
    return (w1 * w2).reshape(shape) * state[f"{name}.alpha"] / state[f"{name}.hada_w1_b"].shape[0]


def random_loha(base: Path, path: Path, std: float) -> tuple[Path, dict[str, torch.Tensor]]:
    """A LoHa (dim 2, conv layers too) of the model at `base` with every factor random: a file and its tensors."""
    model = load_base_model(base)
    kind = NETWORK_TYPES["LoHa"]
    options = parse_network_args(kind.module, [f"algo={kind.algo}", "conv_dim=2", "conv_alpha=1"])
    network = LycorisNetwork.from_spec(model.text_encoder, model.unet,
                                       NetworkSpec(kind=kind, dim=2, alpha=1.0, options=options))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    state = {key: tensor.detach().clone() for key, tensor in network.state_dict().items()}
    return save_lora(state, path, metadata={"ss_network_module": "lycoris.kohya"}), state


def test_the_lycoris_merge_command_adds_a_loha_by_its_formula(base, tmp_path):
    loha, state = random_loha(base, tmp_path / "loha.safetensors", std=0.3)
    out = tmp_path / "merged.safetensors"
    assert merge_lycoris.main([str(base), str(loha), str(out), "--weight", "0.5"]) == 0
    before, after = layer_weights(base), layer_weights(out)
    names = {key.split(".", 1)[0] for key in state}
    assert len(names & after.keys()) > 250
    for name in names & after.keys():
        expected = before[name] + 0.5 * loha_difference(state, name, before[name].shape)
        torch.testing.assert_close(after[name], expected, atol=1e-5, rtol=1e-4)


def lycoris_applied(model, loha: Path, weight: float) -> list:
    """lycoris-lora's own modules, built by its own loader (`create_lycoris_from_weights`) from the file's tensors, on
    the model's layers and applied at `weight`. That loader names a layer `lycoris_<its path>`, so the file's kohya
    prefixes are swapped for it (transformers 5's CLIPTextModel has no `text_model.` level)."""
    tensors = load_file(loha)
    networks = []
    for part, prefix in ((model.unet, "lora_unet_"), (model.text_encoder, "lora_te_text_model_")):
        renamed = {"lycoris_" + key.removeprefix(prefix): value for key, value in tensors.items()
                   if key.startswith(prefix)}
        network, _ = create_lycoris_from_weights(weight, None, part, weights_sd=renamed)
        network.apply_to()
        networks.append(network)
    return networks


def test_a_loha_merged_into_the_demo_model_computes_what_lycoris_own_modules_compute(demo, tmp_path):
    """lycoris-lora as the independent reader: its own LoHa modules wrap the demo model's layers and add the LoHa at
    `weight` in their forward; the merged model must compute the same."""
    weight = 0.6
    loha, state = random_loha(demo.model, tmp_path / "loha.safetensors", std=0.3)
    merged = load_base_model(merge_into_checkpoint(demo.model, [loha], [weight], tmp_path / "merged.safetensors"))
    theirs = load_base_model(demo.model)
    latents, timesteps, context = unet_inputs()
    ids = token_ids()
    with torch.no_grad():
        base_unet = theirs.unet(latents, timesteps, context).sample
        base_text = theirs.text_encoder(ids).last_hidden_state
        networks = lycoris_applied(theirs, loha, weight)
        assert sum(len(network.loras) for network in networks) == len({key.split(".", 1)[0] for key in state}) > 250
        theirs_unet = theirs.unet(latents, timesteps, context).sample
        theirs_text = theirs.text_encoder(ids).last_hidden_state
        ours_unet = merged.unet(latents, timesteps, context).sample
        ours_text = merged.text_encoder(ids).last_hidden_state
    assert (theirs_unet - base_unet).abs().max() > 0.05 and (theirs_text - base_text).abs().max() > 0.05
    torch.testing.assert_close(ours_unet, theirs_unet, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours_text, theirs_text, atol=1e-4, rtol=1e-4)


TAIL = 0.05  # the size of the rank 5-8 half of the LoRA below, against its rank 1-4 half


def test_a_resized_lora_loads_in_diffusers_and_moves_the_image_less_than_the_discarded_share(demo, tmp_path):
    """The bound: resizing keeps each module's best rank-4 part (Eckart-Young), so it removes exactly the share
    delta = ||S[4:]|| / ||S|| of that module's weight difference. To first order the image moves linearly with the
    weight differences, so resizing moves it by about delta of the move the LoRA itself makes; the test allows the
    largest delta of any module (computed here by SVD of the original file), and checks that resizing did discard
    something. The demo model is the trained one: the random tiny model's sampling is chaotic (the same resize moved
    its image by up to 80 % of the LoRA's own change), the trained one's is smooth (measured: 2.0 % for delta 5.8 %)."""
    model = load_base_model(demo.model)
    torch.manual_seed(0)  # the lora_down initialisation
    network = LoRANetwork(model.text_encoder, model.unet, dim=8, alpha=4.0, conv_dim=8, conv_alpha=4.0)
    randomize(network, seed=1, std=0.05)
    with torch.no_grad():
        for lora in network.loras:
            lora.lora_down.weight[4:] *= TAIL  # a true rank 8 whose last 4 directions are small
    full = save_lora(network.state_dict(), tmp_path / "full.safetensors")
    resized = resize_lora(full, tmp_path / "resized.safetensors", ResizeTarget(4)).path
    discarded = []
    for delta in deltas(full).values():
        values = torch.linalg.svdvals(delta)
        discarded.append(float(values[4:].norm() / values.norm()))
    bound = max(discarded)

    def image(lora: Path | None) -> torch.Tensor:
        pipeline = pipeline_of(load_base_model(demo.model))
        pipeline.set_progress_bar_config(disable=True)
        if lora is not None:
            pipeline.load_lora_weights(str(lora))
            assert lora_layer_count(pipeline.unet) == 277 and lora_layer_count(pipeline.text_encoder) == 12
        return torch.from_numpy(pipeline("a red circle", num_inference_steps=4, height=64, width=64,
                                         output_type="np", generator=torch.manual_seed(0)).images)

    base_image, full_image, resized_image = image(None), image(full), image(resized)
    lora_effect, resize_effect = (full_image - base_image).norm(), (resized_image - full_image).norm()
    assert lora_effect > 0.5  # the LoRA visibly changes the image
    assert 0.05 * bound * lora_effect < resize_effect < bound * lora_effect, (float(resize_effect / lora_effect),
                                                                              bound)
