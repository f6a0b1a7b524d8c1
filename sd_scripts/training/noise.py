"""The forward diffusion process the LoRA learns to undo: noise schedule, timesteps and the noise itself.

All randomness here comes from an explicit `torch.Generator`, so that a seed repeats a run exactly and a resumed run
can restore the generator's state and continue with the very same noise.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from sd_scripts.training.transfer import to_device


def make_noise_scheduler(v_parameterization: bool, zero_terminal_snr: bool = False) -> DDPMScheduler:
    """The schedule Stable Diffusion 1.x/2.x and SDXL were trained with (and sd-scripts trains LoRAs with).

    `zero_terminal_snr` rescales the betas so the last timestep is pure noise (Lin et al. 2023), as sd-scripts'
    `fix_noise_scheduler_betas_for_zero_terminal_snr` does; diffusers' `rescale_betas_zero_snr` is the same formula.
    """
    return DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        prediction_type="v_prediction" if v_parameterization else "epsilon",
        rescale_betas_zero_snr=zero_terminal_snr,
    )


def sample_timesteps(batch_size: int, num_train_timesteps: int, generator: torch.Generator) -> torch.Tensor:
    """One timestep per sample, uniform over 0..T-1 (on the generator's device)."""
    return torch.randint(0, num_train_timesteps, (batch_size,), generator=generator, device=generator.device)


def make_noise(
    latents: torch.Tensor,
    generator: torch.Generator,
    *,
    noise_offset: float | None = None,
    multires_iterations: int | None = None,
    multires_discount: float = 0.3,
) -> torch.Tensor:
    """Gaussian noise shaped like `latents`, with sd-scripts' optional offset and multi-resolution variants.

    In sd-scripts' order (train_util.get_noise_noisy_latents_and_timesteps): the offset first, then the pyramid
    noise, whose division by the standard deviation therefore also scales the offset. The noise is drawn on the
    generator's device in float32 and then moved to the latents' device and dtype, so the same seed gives the same
    noise whatever the training device or precision.
    """
    shape = latents.shape
    noise = torch.randn(shape, generator=generator, device=generator.device)
    if noise_offset:
        # A per-channel constant shift teaches the model to change the overall brightness of an image.
        noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator, device=generator.device)
    if multires_iterations:
        noise = add_pyramid_noise(noise, generator, multires_iterations, multires_discount)
    return to_device(noise, latents.device, latents.dtype)


def add_pyramid_noise(noise: torch.Tensor, generator: torch.Generator, iterations: int, discount: float) -> torch.Tensor:
    """Multi-resolution ("pyramid") noise: coarser noise layers upsampled and added with weight discount**i.

    For each level i a random factor r in [2, 4) shrinks the size by r**i; levels stop once a side would reach 1 px.
    The sum is divided by its standard deviation so the result stays unit-variance.
    """
    batch, channels, height, width = noise.shape
    upsample = torch.nn.Upsample(size=(height, width), mode="bilinear")
    for level in range(iterations):
        factor = 2 + torch.rand((), generator=generator, device=generator.device).item() * 2
        level_height = max(1, int(height / (factor**level)))
        level_width = max(1, int(width / (factor**level)))
        noise = noise + upsample(
            torch.randn((batch, channels, level_height, level_width), generator=generator, device=generator.device)
        ) * (discount**level)
        if level_height == 1 or level_width == 1:
            break
    return noise / noise.std()

