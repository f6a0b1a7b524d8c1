"""What the U-Net is asked to predict, and how much each sample's error counts.

The loss is sd-scripts' (HEAD): mean squared error per sample over C, H, W; times the sample's loss weight
(`prior_loss_weight` for regularization images); times the min-SNR-gamma weight when asked; then the batch mean.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from sd_scripts.training.transfer import to_device


def training_target(
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    v_parameterization: bool,
) -> torch.Tensor:
    """The noise itself (epsilon models) or the velocity sqrt(a)*noise - sqrt(1-a)*x0 (v-prediction models)."""
    if v_parameterization:
        return scheduler.get_velocity(latents, noise, timesteps.to(latents.device))
    return noise


def signal_to_noise_ratio(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR(t) = alpha_bar_t / (1 - alpha_bar_t), in float32, of the schedule before any zero-terminal-SNR rescaling.

    sd-scripts computes the SNR table that min-SNR weighting reads (`all_snr`) before it rescales the betas, so the
    weights stay those of the original schedule (and finite at the last step, where the rescaled SNR is 0).
    """
    if scheduler.config.rescale_betas_zero_snr:
        scheduler = DDPMScheduler.from_config(scheduler.config, rescale_betas_zero_snr=False)
    alphas_cumprod = to_device(scheduler.alphas_cumprod, timesteps.device, torch.float32)[timesteps]
    return alphas_cumprod / (1.0 - alphas_cumprod)


def min_snr_weights(snr: torch.Tensor, gamma: float, v_parameterization: bool) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), as sd-scripts HEAD computes them.

    Epsilon target: min(SNR, gamma) / SNR. Velocity target: min(SNR, gamma) / (SNR + 1), because the velocity loss
    already carries a factor (SNR + 1) relative to the x0 loss.
    """
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1.0) if v_parameterization else clipped / snr


def diffusion_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    loss_weights: torch.Tensor,
    snr: torch.Tensor | None,
    min_snr_gamma: float | None,
    v_parameterization: bool,
) -> torch.Tensor:
    """The scalar loss of one batch, computed in float32 whatever the training precision (`snr`: with min-SNR)."""
    per_element = torch.nn.functional.mse_loss(prediction.float(), target.float(), reduction="none")
    per_sample = per_element.mean(dim=(1, 2, 3)) * to_device(loss_weights, per_element.device, torch.float32)
    if min_snr_gamma:
        per_sample = per_sample * min_snr_weights(snr.to(per_element.device), min_snr_gamma, v_parameterization)
    return per_sample.mean()
