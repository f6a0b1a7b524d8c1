"""The loss of one batch, from latents and text embeddings: noise, noisy latents, U-Net prediction, weighted MSE.

Shared by the training loop and the benchmark, so the benchmark measures exactly what training runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import DDPMScheduler

from sd_scripts.training.loss import diffusion_loss, signal_to_noise_ratio, training_target
from sd_scripts.training.noise import make_noise, sample_timesteps
from sd_scripts.training.transfer import to_device


@dataclass(frozen=True)
class NoiseSettings:
    v_parameterization: bool = False
    noise_offset: float | None = None
    multires_noise_iterations: int | None = None
    multires_noise_discount: float = 0.3
    min_snr_gamma: float | None = None


def draw_noise(
    latents: torch.Tensor, scheduler: DDPMScheduler, generator: torch.Generator, settings: NoiseSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every random draw of one batch's step, in this order: its noise, then its timesteps.

    Data-parallel processes also call it for the batches the other processes train (and drop the result), so each
    generator stays where one process training all of them would have it.
    """
    noise = make_noise(
        latents,
        generator,
        noise_offset=settings.noise_offset,
        multires_iterations=settings.multires_noise_iterations,
        multires_discount=settings.multires_noise_discount,
    )
    timesteps = sample_timesteps(latents.shape[0], scheduler.config.num_train_timesteps, generator)
    return noise, to_device(timesteps, latents.device)


def unet_loss(
    unet: torch.nn.Module,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    text_embeddings: torch.Tensor,
    loss_weights: torch.Tensor,
    generator: torch.Generator,
    settings: NoiseSettings,
    autocast: Callable[[], contextlib.AbstractContextManager],
    added_cond_kwargs: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Noise `latents` (already scaled) at random timesteps and score the U-Net's prediction of the target.

    SDXL's U-Net also takes `added_cond_kwargs`: the pooled text embedding ("text_embeds") and the size
    conditioning ("time_ids").
    """
    noise, timesteps = draw_noise(latents, scheduler, generator, settings)
    noisy_latents = scheduler.add_noise(latents, noise, timesteps)
    with autocast():
        prediction = unet(noisy_latents, timesteps, text_embeddings, added_cond_kwargs=added_cond_kwargs).sample
    target = training_target(scheduler, latents, noise, timesteps, settings.v_parameterization)
    return diffusion_loss(
        prediction,
        target,
        loss_weights=loss_weights,
        snr=signal_to_noise_ratio(scheduler, timesteps) if settings.min_snr_gamma else None,
        min_snr_gamma=settings.min_snr_gamma,
        v_parameterization=settings.v_parameterization,
    )
