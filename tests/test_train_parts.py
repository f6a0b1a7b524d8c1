"""Unit tests of the training loop's parts: noise, targets, loss weights, optimizers, schedules, state, prompts."""

from __future__ import annotations

import random

import numpy
import pytest
import torch

from sd_scripts.args import TrainArgs
from sd_scripts.errors import UserFacingError
from sd_scripts.training.length import plan_run_length
from sd_scripts.training.loss import diffusion_loss, min_snr_weights, signal_to_noise_ratio, training_target
from sd_scripts.training.noise import make_noise, make_noise_scheduler, sample_timesteps
from sd_scripts.training.precision import resolve_mixed_precision
from sd_scripts.training.sampling import parse_prompt_line, read_prompt_file, sample_scheduler
from sd_scripts.training.length import resolve_warmup_steps
from sd_scripts.training.schedulers import build_lr_scheduler
from sd_scripts.training.state import (
    RunPosition,
    load_training_state,
    read_position,
    restore_random_states,
    save_training_state,
)
from sd_scripts.networks.kinds import parse_network_args
from sd_scripts.training.validation import validate_args


# --- noise and targets -------------------------------------------------------------------------------------------
def test_noise_scheduler_has_sd_betas():
    scheduler = make_noise_scheduler(v_parameterization=False)
    assert scheduler.config.num_train_timesteps == 1000
    assert scheduler.betas[0].item() == pytest.approx(0.00085)
    assert scheduler.betas[-1].item() == pytest.approx(0.012)
    assert scheduler.config.clip_sample is False


def test_noise_repeats_with_the_same_generator_state():
    latents = torch.zeros(2, 4, 8, 8)
    first = make_noise(latents, torch.Generator().manual_seed(3), noise_offset=0.1, multires_iterations=3)
    second = make_noise(latents, torch.Generator().manual_seed(3), noise_offset=0.1, multires_iterations=3)
    assert torch.equal(first, second)


def test_noise_offset_adds_one_constant_per_channel():
    latents = torch.zeros(3, 4, 16, 16)
    plain = make_noise(latents, torch.Generator().manual_seed(1))
    offset = make_noise(latents, torch.Generator().manual_seed(1), noise_offset=0.5)
    shift = offset - plain
    # The difference is constant over H and W for each sample and channel, and not zero.
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift), atol=1e-6)
    assert shift.abs().max() > 0.01


def test_multires_noise_is_unit_variance_and_spatially_correlated():
    latents = torch.zeros(4, 4, 32, 32)
    noise = make_noise(latents, torch.Generator().manual_seed(0), multires_iterations=6, multires_discount=0.8)
    assert noise.std().item() == pytest.approx(1.0, abs=1e-4)
    neighbours = torch.corrcoef(torch.stack([noise[..., :-1].flatten(), noise[..., 1:].flatten()]))[0, 1]
    assert neighbours > 0.1  # plain Gaussian noise has ~0 correlation between neighbouring pixels


def test_timesteps_are_uniform_over_the_schedule():
    timesteps = sample_timesteps(20000, 1000, torch.Generator().manual_seed(0))
    assert timesteps.min() >= 0 and timesteps.max() <= 999
    assert timesteps.float().mean().item() == pytest.approx(499.5, abs=10)


def test_v_prediction_target_is_the_velocity():
    scheduler = make_noise_scheduler(v_parameterization=True)
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    timesteps = torch.tensor([10, 900])
    alpha_bar = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    expected = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
    assert torch.allclose(training_target(scheduler, latents, noise, timesteps, True), expected, atol=1e-6)
    assert training_target(scheduler, latents, noise, timesteps, False) is noise


def test_min_snr_weights_follow_the_head_formula():
    snr = torch.tensor([0.5, 5.0, 50.0])
    epsilon = min_snr_weights(snr, gamma=5.0, v_parameterization=False)
    velocity = min_snr_weights(snr, gamma=5.0, v_parameterization=True)
    assert torch.allclose(epsilon, torch.tensor([1.0, 1.0, 0.1]))
    assert torch.allclose(velocity, torch.tensor([0.5 / 1.5, 5.0 / 6.0, 5.0 / 51.0]))


def test_loss_is_weighted_per_sample_then_averaged():
    scheduler = make_noise_scheduler(v_parameterization=False)
    prediction = torch.zeros(2, 4, 2, 2)
    target = torch.stack([torch.ones(4, 2, 2), 2 * torch.ones(4, 2, 2)])
    timesteps = torch.tensor([100, 999])
    snr = signal_to_noise_ratio(scheduler, timesteps)
    weights = torch.tensor([1.0, 0.5])
    plain = diffusion_loss(prediction, target, loss_weights=weights, snr=snr, min_snr_gamma=None, v_parameterization=False)
    assert plain.item() == pytest.approx((1.0 * 1 + 4.0 * 0.5) / 2)
    gamma = 1.0
    weighted = diffusion_loss(prediction, target, loss_weights=weights, snr=snr, min_snr_gamma=gamma,
                              v_parameterization=False)
    snr_weights = torch.clamp(snr, max=gamma) / snr
    assert weighted.item() == pytest.approx(((1.0 * snr_weights[0] + 2.0 * snr_weights[1]) / 2).item(), rel=1e-5)


# --- length, warmup, schedules -----------------------------------------------------------------------------------
def test_run_length_counts_like_sd_scripts():
    by_steps = plan_run_length(10, 3, 25, None)
    assert (by_steps.steps_per_epoch, by_steps.total_steps, by_steps.epochs) == (4, 25, 7)
    by_epochs = plan_run_length(10, 3, 25, 2)  # epochs win over steps
    assert (by_epochs.total_steps, by_epochs.epochs) == (8, 2)


@pytest.mark.parametrize(("value", "total", "expected"), [(0, 100, 0), (0.05, 1000, 50), (0.1, 35, 3), (40, 100, 40), (40.0, 100, 40)])
def test_warmup_resolves_ratio_or_steps(value, total, expected):
    assert resolve_warmup_steps(value, total) == expected


def test_warmup_rejects_fractional_step_counts():
    with pytest.raises(UserFacingError):
        resolve_warmup_steps(2.5, 100)


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"])
def test_every_schedule_warms_up_and_runs(name):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler, notes = build_lr_scheduler(optimizer, name, warmup_steps=0 if name == "constant" else 4,
                                          total_steps=20, num_cycles=2, power=2.0)
    rates = []
    for _ in range(20):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    if name == "constant":
        assert rates == [1.0] * 20 and not notes
    else:
        assert rates[:4] == pytest.approx([0.0, 0.25, 0.5, 0.75])
        assert rates[4] == pytest.approx(1.0)
    if name in ("linear", "cosine", "polynomial"):
        assert rates[-1] < 0.2


def test_constant_schedule_with_warmup_says_the_warmup_is_unused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    _, notes = build_lr_scheduler(optimizer, "constant", warmup_steps=5, total_steps=20)
    assert len(notes) == 1 and "constant_with_warmup" in notes[0]


# --- precision ---------------------------------------------------------------------------------------------------
def test_fp16_on_cpu_falls_back_to_fp32_with_a_note():
    assert resolve_mixed_precision("fp16", cuda=False)[0] == "no"
    assert resolve_mixed_precision("fp16", cuda=False)[1]
    assert resolve_mixed_precision("bf16", cuda=False, cpu_bf16=True) == ("bf16", [])
    assert resolve_mixed_precision("no", cuda=False) == ("no", [])


# --- resumable state ---------------------------------------------------------------------------------------------
def test_state_round_trip_restores_optimizer_schedule_and_random_generators(tmp_path):
    torch.manual_seed(0)
    network = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(network.parameters(), lr=0.1)
    scheduler, _ = build_lr_scheduler(optimizer, "cosine", warmup_steps=1, total_steps=10)
    for _ in range(3):
        network(torch.randn(2, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    generator = torch.Generator().manual_seed(5)
    random.seed(1), numpy.random.seed(2), torch.manual_seed(3)
    position = RunPosition(global_step=3, epoch=2, batches_done=1, total_steps=10)
    state_dir = save_training_state(tmp_path / "run-step00000003-state", network_state=network.state_dict(),
                                    optimizer=optimizer, lr_scheduler=scheduler, noise_generator=generator,
                                    position=position)
    expected = (random.random(), numpy.random.rand(), torch.rand(1), torch.rand(1, generator=generator))

    class Restorable(torch.nn.Linear):
        def load_weights(self, state_dict):
            self.load_state_dict(state_dict)

    fresh = Restorable(4, 4)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    fresh_scheduler, _ = build_lr_scheduler(fresh_optimizer, "cosine", warmup_steps=1, total_steps=10)
    fresh_generator = torch.Generator()
    random.seed(9), numpy.random.seed(9), torch.manual_seed(9)
    states = load_training_state(state_dir, network=fresh, optimizer=fresh_optimizer, lr_scheduler=fresh_scheduler)
    restore_random_states(states, fresh_generator)
    assert read_position(state_dir) == position
    assert torch.equal(fresh.weight, network.weight)
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()
    assert torch.equal(fresh_optimizer.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert (random.random(), numpy.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2]) and torch.equal(torch.rand(1, generator=fresh_generator), expected[3])
    with pytest.raises(UserFacingError, match="already exists"):
        save_training_state(state_dir, network_state=network.state_dict(), optimizer=optimizer,
                            lr_scheduler=scheduler, noise_generator=generator, position=position)


def test_a_folder_that_is_not_a_state_is_refused(tmp_path):
    with pytest.raises(UserFacingError, match="not a training state"):
        read_position(tmp_path)


# --- sample prompts ----------------------------------------------------------------------------------------------
def test_prompt_file_syntax(tmp_path):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("# a comment\n\nmasterpiece, 1girl --n lowres, bad hands --w 77 --h 30 --d 42 --l 5.5 --s 2000\n"
                           "a cat\n", encoding="utf-8")
    first, second = read_prompt_file(prompt_file)
    assert (first.prompt, first.negative_prompt) == ("masterpiece, 1girl", "lowres, bad hands")
    assert (first.width, first.height, first.seed, first.guidance_scale, first.steps) == (72, 64, 42, 5.5, 1000)
    assert (second.prompt, second.width, second.height, second.steps, second.guidance_scale) == ("a cat", 512, 512, 30, 7.5)
    with pytest.raises(UserFacingError, match="needs a number"):
        parse_prompt_line("a dog --s many")


def test_sampler_names_map_to_diffusers_schedulers():
    assert type(sample_scheduler("k_euler_a", False)).__name__ == "EulerAncestralDiscreteScheduler"
    assert sample_scheduler("ddim", True).config.prediction_type == "v_prediction"
    with pytest.raises(UserFacingError):
        sample_scheduler("warp_drive", False)


# --- validation --------------------------------------------------------------------------------------------------
def _valid_args(**changes) -> TrainArgs:
    values = dict(pretrained_model_name_or_path="model.safetensors", train_data_dir="images", output_dir="out",
                  learning_rate=1e-4)
    values.update(changes)
    return TrainArgs(**values)


@pytest.mark.parametrize(("changes", "words"), [
    ({"output_dir": None}, "output folder"),
    ({"pretrained_model_name_or_path": ""}, "base model"),
    ({"train_data_dir": None}, "image folder"),
    ({"learning_rate": 0.0}, "learning rate"),
    ({"network_module": "networks.oft"}, "not one this trainer has"),
    ({"color_aug": True, "cache_latents": True}, "Colour augmentation"),
    ({"network_train_unet_only": True, "network_train_text_encoder_only": True}, "choose one"),
    ({"lr_scheduler": "warmup_stable_decay"}, "lr_scheduler"),
    ({"max_token_length": 100}, "max_token_length"),
    ({"network_args": ["algo=loha"]}, "does not apply to LoRA"),
])
def test_bad_settings_are_refused_with_one_sentence(changes, words):
    with pytest.raises(UserFacingError, match=words) as caught:
        validate_args(_valid_args(**changes))
    assert caught.value.message.count(". ") == 0 and caught.value.message.endswith(".")


def test_good_settings_pass_and_network_args_parse():
    validate_args(_valid_args(network_args=["conv_dim=8", "conv_alpha=4"]))
    assert parse_network_args("networks.lora", ["conv_dim=8", "conv_alpha=4"]) == {"conv_dim": 8, "conv_alpha": 4.0}
