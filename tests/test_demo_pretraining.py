"""The demo model is pre-trained: its VAE reconstructs drawings, and a short LoRA visibly changes its samples."""

from __future__ import annotations

from pathlib import Path

import numpy
import torch
from PIL import Image

from sd_scripts.args import TrainArgs
from sd_scripts.demo import REPEATS_FOLDER, tiny_sd15_model
from sd_scripts.demo_pretraining import to_pixels
from sd_scripts.events import SampleMade
from sd_scripts.models import load_base_model
from sd_scripts.train import train


def demo_pictures(images: Path) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in sorted((images / REPEATS_FOLDER).glob("*.png"))]


@torch.no_grad()
def reconstruction_error(vae, pixels: torch.Tensor) -> float:
    return torch.nn.functional.mse_loss(vae.decode(vae.encode(pixels).latent_dist.mean).sample, pixels).item()


def test_the_pretrained_vae_reconstructs_the_demo_images_far_better_than_a_random_one(demo):
    pixels = to_pixels(demo_pictures(demo.images))
    pretrained = reconstruction_error(load_base_model(demo.model).vae, pixels)
    random = reconstruction_error(tiny_sd15_model().vae, pixels)
    assert pretrained < 0.25 * random, (pretrained, random)


def test_a_short_lora_moves_the_samples_towards_the_training_shapes(demo, tmp_path):
    paths = demo
    samples: list[SampleMade] = []
    result = train(
        TrainArgs(
            pretrained_model_name_or_path=str(paths.model),
            train_data_dir=str(paths.images),
            output_dir=str(tmp_path),
            output_name="short",
            caption_extension=".txt",
            resolution="64",
            network_dim=8,
            network_alpha=8.0,
            learning_rate=2e-3,  # twice the demo's, for one epoch (50 steps) instead of four
            optimizer_type="AdamW",
            max_train_epochs=1,
            train_batch_size=2,
            cache_latents=True,
            sample_prompts=str(paths.prompts),
            sample_at_first=True,
            sample_every_n_epochs=1,
            sample_sampler="ddim",
            seed=23,
        ),
        on_event=lambda event: samples.append(event) if isinstance(event, SampleMade) else None,
    )
    assert result.ok, result.message
    first_prompt = [sample for sample in samples if sample.prompt == samples[0].prompt]
    before, after = (numpy.asarray(Image.open(sample.path).convert("RGB"), dtype=float)
                     for sample in (first_prompt[0], first_prompt[-1]))
    training = [numpy.asarray(picture, dtype=float) for picture in demo_pictures(paths.images)]

    def distance_to_training(image: numpy.ndarray) -> float:
        return min(float(numpy.abs(image - picture).mean()) for picture in training)

    # Measured with 100 steps at the demo's rate: a change of 31/255 per pixel, distance 51 -> 38.
    assert numpy.abs(after - before).mean() > 15, "the LoRA should change the sample visibly"
    assert distance_to_training(after) < 0.85 * distance_to_training(before)
