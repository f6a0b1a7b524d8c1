"""Pre-training of the demo model, so that its samples are pictures and the demo LoRA's effect can be seen.

A randomly initialised model turns every prompt into noise, before and after any LoRA. Two short trainings, run once
when the demo is built, give it the two things a before/after comparison needs:

1. The VAE learns to reconstruct small drawings (shapes and stripes on a light background) with a plain pixel MSE on
   its mean latent. Its latents are then rescaled so that, multiplied by SD's scaling factor 0.18215, they have unit
   variance as the trainer expects, and its posterior variance is made negligible, so cached latents are the mean.
   The light background matters: with 32 channels and SD's 32 normalisation groups, each of the tiny VAE's channels
   is normalised on its own, which hides absolute colours from it; with a shared background it learns the background
   and the shapes' outlines in these few steps, while the shapes' own colours still come out as one dark hue.
2. The UNet learns, as a base model, a style that is NOT the demo's: stripes of one colour on the light background,
   captioned "red stripes", "blue stripes", ... The text encoders stay as initialised; captions are dropped now and
   then so that the empty prompt of classifier-free guidance means "any stripes". An SDXL U-Net gets SDXL's
   conditioning as the trainer computes it (text_encoding.py): both encoders' states, the pooled embedding, and the
   size/crop ids of an uncropped 64 px image.

The demo LoRA, trained on single shapes captioned "shpz, a red circle", then visibly turns the base model's stripes
into shapes. Everything here is seeded and runs with a fixed thread count and torch's deterministic algorithms, so
the built model is the same bytes every time on the same machine.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy
import torch
from PIL import Image, ImageDraw

from sd_scripts.demo import BACKGROUND, COLOURS, IMAGE_SIZE, SHAPES, draw_shape
from sd_scripts.models.text_encoding import encode_sdxl_tokens, encode_tokens, sdxl_time_ids, tokenize
from sd_scripts.training.noise import make_noise_scheduler

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sd_scripts.models import BaseModel

PRETRAINING_THREADS = 2  # fixed, so the result does not depend on the core count
STRIPE_COLOURS = COLOURS | {"purple": (130, 50, 170), "orange": (240, 130, 30)}

VAE_IMAGES = 96
VAE_STEPS = 100
VAE_BATCH = 8
VAE_LEARNING_RATE = 3e-3

BASE_IMAGES = 48
UNET_STEPS = 100
UNET_BATCH = 16
UNET_LEARNING_RATE = 1e-3
CAPTION_DROPOUT = 0.2
NEGLIGIBLE_LOG_VARIANCE = -30.0  # the floor diffusers clamps the VAE's log-variance to


def pretrain_demo_model(model: BaseModel, seed: int = 0) -> None:
    """Train the tiny model's VAE, then its UNet as a stripes base model, in place and reproducibly."""
    rng = random.Random(seed)
    generator = torch.Generator("cpu").manual_seed(seed)
    with reproducible_torch(PRETRAINING_THREADS):
        vae_images = [draw_shapes(rng) for _ in range(VAE_IMAGES // 2)] + [draw_stripes(rng)[0] for _ in range(VAE_IMAGES // 2)]
        pixels = to_pixels(vae_images)
        train_autoencoder(model.vae, pixels, generator)
        calibrate_latents(model.vae, pixels)

        stripes = [draw_stripes(rng) for _ in range(BASE_IMAGES)]
        train_base_unet(model, to_pixels([image for image, _ in stripes]), [caption for _, caption in stripes], generator)
    for module in (model.vae, model.unet, *model.text_encoders):
        module.requires_grad_(False).eval()


@contextlib.contextmanager
def reproducible_torch(threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic algorithms for the duration; the caller's settings come back after."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)


def draw_shapes(rng: random.Random) -> Image.Image:
    """One or two shapes of any demo colour, size and place on the light background (what the VAE must keep)."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 2)):
        size = rng.randint(12, 40)
        left, top = rng.randint(0, IMAGE_SIZE - size), rng.randint(0, IMAGE_SIZE - size)
        draw_shape(draw, rng.choice(SHAPES), (left, top, left + size, top + size), rng.choice(list(STRIPE_COLOURS.values())))
    return image


def draw_stripes(rng: random.Random) -> tuple[Image.Image, str]:
    """Horizontal or vertical stripes of one colour on the light background, and their caption ("red stripes")."""
    name = rng.choice(list(STRIPE_COLOURS))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    width = rng.randint(4, 10)
    vertical = rng.random() < 0.5
    for start in range(-rng.randint(0, 2 * width), IMAGE_SIZE, 2 * width):
        box = (start, 0, start + width - 1, IMAGE_SIZE) if vertical else (0, start, IMAGE_SIZE, start + width - 1)
        draw.rectangle(box, fill=STRIPE_COLOURS[name])
    return image, f"{name} stripes"


def to_pixels(images: list[Image.Image]) -> torch.Tensor:
    """RGB images as a [N, 3, H, W] float tensor in [-1, 1], the VAE's input range."""
    array = numpy.stack([numpy.asarray(image, dtype=numpy.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1


def train_autoencoder(vae: AutoencoderKL, pixels: torch.Tensor, generator: torch.Generator) -> None:
    """Plain reconstruction training on the mean latent: enough for a VAE that only ever sees drawings."""
    vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=VAE_LEARNING_RATE, weight_decay=0.0)
    for _ in range(VAE_STEPS):
        batch = pixels[torch.randint(0, len(pixels), (VAE_BATCH,), generator=generator)]
        reconstruction = vae.decode(vae.encode(batch).latent_dist.mean).sample
        loss = torch.nn.functional.mse_loss(reconstruction, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    vae.eval().requires_grad_(False)


@torch.no_grad()
def calibrate_latents(vae: AutoencoderKL, pixels: torch.Tensor) -> None:
    """Rescale the latent space so that latents times the VAE's scaling factor have unit variance (as SD's do), and
    make the posterior's variance negligible; decoding is unchanged, because post_quant_conv undoes the scale."""
    scale = 1.0 / (vae.encode(pixels).latent_dist.mean.std().item() * vae.config.scaling_factor)
    channels = vae.config.latent_channels
    quant, post_quant = vae.quant_conv, vae.post_quant_conv
    quant.weight[:channels] *= scale
    quant.bias[:channels] *= scale
    quant.weight[channels:] = 0.0
    quant.bias[channels:] = NEGLIGIBLE_LOG_VARIANCE
    post_quant.weight /= scale


def train_base_unet(model: BaseModel, pixels: torch.Tensor, captions: list[str], generator: torch.Generator) -> None:
    """Epsilon-prediction training of the UNet on the stripes, with SD's noise schedule and frozen text encoders."""
    unet: UNet2DConditionModel = model.unet
    with torch.no_grad():
        latents = model.vae.encode(pixels).latent_dist.mean * model.vae.config.scaling_factor
        contexts, pooled = encode_captions(model, captions + [""])
    scheduler = make_noise_scheduler(v_parameterization=False)
    unet.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=UNET_LEARNING_RATE, weight_decay=0.0)
    for _ in range(UNET_STEPS):
        chosen = torch.randint(0, len(latents), (UNET_BATCH,), generator=generator)
        dropped = torch.rand(UNET_BATCH, generator=generator) < CAPTION_DROPOUT
        context = torch.where(dropped[:, None, None], contexts[-1:], contexts[chosen])
        noise = torch.randn(latents[chosen].shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (UNET_BATCH,), generator=generator)
        noisy = scheduler.add_noise(latents[chosen], noise, timesteps)
        added = {}
        if pooled is not None:
            size = torch.tensor([[IMAGE_SIZE, IMAGE_SIZE]] * UNET_BATCH, dtype=torch.float32)
            added["added_cond_kwargs"] = {
                "text_embeds": torch.where(dropped[:, None], pooled[-1:], pooled[chosen]),
                "time_ids": sdxl_time_ids(size, torch.zeros_like(size), size),
            }
        loss = torch.nn.functional.mse_loss(unet(noisy, timesteps, context, **added).sample, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    unet.eval().requires_grad_(False)


def encode_captions(model: BaseModel, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The U-Net's context for each caption, and for SDXL the pooled embedding (None otherwise)."""
    ids = tokenize(model.tokenizer, captions, None, v2=model.v2)
    if not model.is_sdxl:
        return encode_tokens(model.text_encoder, ids, clip_skip=None, max_token_length=None, v2=model.v2), None
    ids_2 = tokenize(model.tokenizer_2, captions, None, v2=True)  # "!"-padded, as SD2's
    return encode_sdxl_tokens(model.text_encoder, model.text_encoder_2, ids, ids_2, max_token_length=None)
