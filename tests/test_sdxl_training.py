"""Training SDXL LoRAs end to end on the tiny SDXL-layout model (2 steps each), and the v-prediction maths.

- a v-prediction single file with zero terminal SNR, cached text-encoder outputs on disk and a sample: the LoRA has
  sd-scripts' SDXL keys and metadata, the cache files hold what the encoders give;
- `python -m sd_scripts.train --config_file run.toml` (sd-scripts' names, no family setting) on the diffusers folder
  trains both text encoders and the U-Net;
- the rescaled betas, the v targets and the min-SNR weights equal sd-scripts' formulas, recomputed here.
"""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from network_tables import sgm_file_weight
from test_dataset_fixtures import settings_for, write_folder

from sd_scripts.args import TrainArgs
from sd_scripts.dataset import scan_dataset
from sd_scripts.dataset.text_encoder_cache import cache_text_encoder_outputs, te_outputs_npz_path
from sd_scripts.errors import UserFacingError
from sd_scripts.models.text_encoding import encode_sdxl_tokens, tokenize
from sd_scripts.train import main, train
from sd_scripts.training.loss import min_snr_weights, signal_to_noise_ratio, training_target
from sd_scripts.training.noise import make_noise_scheduler
from sd_scripts.training.validation import check_settings_for_model, validate_args


CAPTIONS = ["a red circle", "a blue square, flat", "a green triangle"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl_images")
    write_folder(root / "1_shapes", [(64, 64), (96, 64), (64, 80)], CAPTIONS)
    return root


def sdxl_args(model, images, output_dir, **changes) -> TrainArgs:
    values = dict(
        pretrained_model_name_or_path=str(model), train_data_dir=str(images), caption_extension=".txt",
        resolution="64", enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128, bucket_reso_steps=32,
        output_dir=str(output_dir), output_name="sdxl", learning_rate=1e-3, network_dim=4, network_alpha=4.0,
        max_train_steps=2, seed=3, max_data_loader_n_workers=0,
    )
    return TrainArgs(**values | changes)


def file_of(path):
    with safe_open(path, "pt") as handle:
        return set(handle.keys()), handle.metadata()


def test_v_prediction_single_file_with_cached_text_encoder_outputs(tiny_sdxl, images, tmp_path):
    from sd_scripts.models import save_ldm_checkpoint

    model_path = tmp_path / "tiny_sdxl_v.safetensors"  # NoobAI-style: the file says v-prediction itself
    save_ldm_checkpoint(dataclasses.replace(tiny_sdxl, v_parameterization=True), model_path)
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle --w 64 --h 64 --s 2 --d 1\n", encoding="utf-8")
    args = sdxl_args(model_path, folder, tmp_path / "out", network_train_unet_only=True, zero_terminal_snr=True,
                     cache_text_encoder_outputs_to_disk=True, min_snr_gamma=5.0, noise_offset=0.05,
                     sample_prompts=str(prompts), sample_every_n_steps=1, sample_sampler="euler_a")

    result = train(args)

    assert result.ok, result.message
    keys, metadata = file_of(result.lora_path)
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_middle_block_1_transformer_blocks_9_attn2_to_k.lora_up.weight" in keys
    assert not any(key.startswith("lora_te") for key in keys)  # U-Net only
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert metadata["ss_v2"] == "False"
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert metadata["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert metadata["modelspec.prediction_type"] == "v"
    assert metadata["modelspec.resolution"] == "64x64"
    assert metadata["ss_zero_terminal_snr"] == "True"
    assert metadata["ss_network_module"] == "networks.lora"
    assert sorted((tmp_path / "out" / "sample").glob("*.png"))  # StableDiffusionXLPipeline made the sample

    # sd-scripts' cache files, next to each image, hold what the encoders give for that caption
    for number, caption in enumerate(CAPTIONS):
        with np.load(te_outputs_npz_path(folder / "1_shapes" / f"img{number:02d}.png")) as npz:
            assert {"hidden_state1", "hidden_state2", "pool2"} <= set(npz.files)
            with torch.no_grad():
                context, pooled = encode_sdxl_tokens(
                    tiny_sdxl.text_encoder, tiny_sdxl.text_encoder_2, tokenize(tiny_sdxl.tokenizer, [caption], None, False),
                    tokenize(tiny_sdxl.tokenizer_2, [caption], None, True), max_token_length=None)
            np.testing.assert_allclose(np.concatenate([npz["hidden_state1"], npz["hidden_state2"]], -1),
                                       context[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(npz["pool2"], pooled[0].numpy(), atol=1e-5)


def test_config_file_trains_a_diffusers_folder_with_both_text_encoders(tiny_sdxl_files, images, tmp_path):
    single_file, folder = tiny_sdxl_files
    config = tmp_path / "run.toml"
    config.write_text(f"""
[model_arguments]
pretrained_model_name_or_path = "{folder.as_posix()}"

[dataset_arguments]
train_data_dir = "{images.as_posix()}"
caption_extension = ".txt"
resolution = "64"
enable_bucket = true
min_bucket_reso = 32
max_bucket_reso = 128
bucket_reso_steps = 32
max_data_loader_n_workers = 0

[training_arguments]
output_dir = "{(tmp_path / 'out').as_posix()}"
output_name = "from_toml"
max_train_steps = 2
learning_rate = 1e-3
seed = 5
max_token_length = 150

[network_arguments]
network_module = "networks.lora"
network_dim = 4
network_alpha = 2
""", encoding="utf-8")

    assert main(["--config_file", str(config)]) == 0

    keys, metadata = file_of(tmp_path / "out" / "from_toml.safetensors")
    assert any(key.startswith("lora_te1_text_model_encoder_layers_0_") for key in keys)
    assert any(key.startswith("lora_te2_text_model_encoder_layers_0_") for key in keys)
    assert any(key.startswith("lora_unet_output_blocks_") for key in keys)
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert metadata["modelspec.prediction_type"] == "epsilon"
    assert metadata["ss_max_token_length"] == "150"
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "out" / "from_toml.safetensors")
    for part in ("lora_te1_", "lora_te2_", "lora_unet_"):  # lora_up starts at zero: every part has learned
        assert any(weights[key].abs().sum() > 0 for key in weights if key.startswith(part) and "lora_up" in key)
    # every layer lands on a tensor of the same model's SGM single file, as A1111 and ComfyUI map SDXL LoRAs
    with safe_open(str(single_file), framework="pt") as model:
        shapes = {key: tuple(model.get_slice(key).get_shape()) for key in model.keys()}
    for key in weights:
        if key.endswith(".lora_down.weight"):
            name = key.removesuffix(".lora_down.weight")
            _, delta_shape = sgm_file_weight(name, shapes)
            assert (weights[f"{name}.lora_up.weight"].shape[0], weights[key].shape[1]) == delta_shape[:2], name


def sd_scripts_zero_terminal_snr_betas() -> torch.Tensor:
    """custom_train_functions.fix_noise_scheduler_betas_for_zero_terminal_snr on SD's scaled-linear betas."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    alphas_bar_sqrt = (1 - betas).cumprod(0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


def test_zero_terminal_snr_betas_v_targets_and_min_snr_weights_follow_sd_scripts():
    scheduler = make_noise_scheduler(v_parameterization=True, zero_terminal_snr=True)
    expected_betas = sd_scripts_zero_terminal_snr_betas()
    torch.testing.assert_close(scheduler.betas, expected_betas, rtol=0, atol=1e-6)  # float32 rounding
    alphas_bar = (1 - expected_betas).cumprod(0)
    assert float(scheduler.alphas_cumprod[-1]) == 0.0  # the last step is pure noise

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 8, 8, generator=generator)
    noise = torch.randn(3, 4, 8, 8, generator=generator)
    timesteps = torch.tensor([0, 500, 999])
    a = alphas_bar[timesteps].view(-1, 1, 1, 1)
    velocity = a.sqrt() * noise - (1 - a).sqrt() * latents  # v = sqrt(abar) eps - sqrt(1 - abar) x0
    torch.testing.assert_close(training_target(scheduler, latents, noise, timesteps, True), velocity, rtol=0, atol=1e-6)
    assert torch.equal(training_target(scheduler, latents[2:], noise[2:], timesteps[2:], True), -latents[2:])

    # min-SNR: sd-scripts computes all_snr before the fix, so the weights are the original schedule's
    original_bar = (1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2).cumprod(0)[timesteps]
    snr = signal_to_noise_ratio(scheduler, timesteps)
    torch.testing.assert_close(snr, original_bar / (1 - original_bar), rtol=1e-5, atol=0)
    torch.testing.assert_close(min_snr_weights(snr, 5.0, True), torch.clamp(snr, max=5.0) / (snr + 1))
    assert math.isfinite(float(min_snr_weights(snr, 5.0, False)[-1]))


def test_text_encoder_cache_files_are_reused_only_for_the_same_caption_model_and_length(tmp_path):
    write_folder(tmp_path / "1_a", [(64, 64), (64, 64)], ["one", "two"])
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    encoded: list[list[str]] = []

    def encode(captions):
        encoded.append(captions)
        size = len(captions)
        return torch.ones(size, 77, 3), torch.zeros(size, 77, 5), torch.full((size, 5), float(len(encoded)))

    def cache(model="a.safetensors", length=77):
        return cache_text_encoder_outputs(plan, encode, sdxl=True, to_disk=True, base_model=model,
                                          token_length=length, batch_size=4)

    first = cache()
    states1, states2, pooled = first.get([0, 1])
    assert states1.shape == (2, 77, 3) and states2.shape == (2, 77, 5) and pooled.shape == (2, 5)
    assert cache().get([0])[2][0, 0] == 1 and len(encoded) == 1  # reused
    (tmp_path / "1_a" / "img01.txt").write_text("two, edited", encoding="utf-8")
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    cache(); assert encoded[-1] == ["two, edited"]  # noqa: E702 - the stale file only
    cache(model="b.safetensors"); assert encoded[-1] == ["one", "two, edited"]  # noqa: E702
    cache(length=152); assert len(encoded) == 4  # noqa: E702 - (the fake states stay 77 long: valid for 77 again)
    with np.load(te_outputs_npz_path(plan.images[0].path)) as npz:
        arrays = {key: npz[key] for key in ("hidden_state1", "hidden_state2", "pool2")}
    np.savez(te_outputs_npz_path(plan.images[0].path), **arrays)  # as sd-scripts writes it: no caption to check
    cache(); assert encoded[-1] == ["one"]  # noqa: E702


def test_sd_scripts_rules_for_text_encoder_caching_and_zero_terminal_snr(tmp_path):
    base = dict(pretrained_model_name_or_path="m.safetensors", train_data_dir=str(tmp_path), output_dir=str(tmp_path))
    with pytest.raises(UserFacingError, match="network_train_unet_only"):
        validate_args(TrainArgs(**base, cache_text_encoder_outputs=True))
    with pytest.raises(UserFacingError, match="zero terminal SNR"):
        prompts = tmp_path / "p.txt"
        prompts.write_text("a cat\n", encoding="utf-8")
        validate_args(TrainArgs(**base, zero_terminal_snr=True, sample_prompts=str(prompts), sample_sampler="pndm"))
    write_folder(tmp_path / "1_a", [(64, 64)], ["one, two"])
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    args = TrainArgs(**base, cache_text_encoder_outputs=True, network_train_unet_only=True)
    assert check_settings_for_model(args, plan, sdxl=False, v_parameterization=False) == []  # SD 1.x/2.x cache too
    notes = check_settings_for_model(dataclasses.replace(args, clip_skip=2, zero_terminal_snr=True), plan, sdxl=True,
                                     v_parameterization=False)
    assert any("clip_skip" in note for note in notes) and any("zero_terminal_snr" in note for note in notes)
