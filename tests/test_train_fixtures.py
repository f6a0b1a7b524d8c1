"""Shared helpers for the trainer's end-to-end tests: the demo model and images, short runs, a fixed loss probe."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy
import pytest
import torch

from sd_scripts.args import TrainArgs
from sd_scripts.demo import DemoPaths
from sd_scripts.events import Event
from sd_scripts.models import encode_tokens, load_base_model, tokenize
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.training.noise import make_noise_scheduler



@pytest.fixture(scope="session")
def one_repeat_images(demo, tmp_path_factory) -> Path:
    """The demo images with 1 repeat instead of 10, so that an epoch is 10 images and tests stay short."""
    parent = tmp_path_factory.mktemp("images")
    shutil.copytree(next(demo.images.iterdir()), parent / "1_shapes")
    return parent


def demo_args(demo: DemoPaths, images: Path, output_dir: Path | None, **changes) -> TrainArgs:
    values = dict(
        pretrained_model_name_or_path=str(demo.model),
        train_data_dir=str(images),
        caption_extension=".txt",
        resolution="64",
        output_dir=None if output_dir is None else str(output_dir),
        output_name="demo",
        learning_rate=1e-3,
        network_dim=4,
        network_alpha=4.0,
        max_train_steps=6,
        seed=1234,
    )
    values.update(changes)
    return TrainArgs(**values)


class EventLog(list):
    """An on_event handler that keeps every event."""

    def __call__(self, event: Event) -> None:
        self.append(event)

    def of(self, kind: type) -> list:
        return [event for event in self if isinstance(event, kind)]


class LossProbe:
    """The diffusion loss of the demo model over a FIXED set of (image, caption, timestep, noise), for any LoRA.

    Used to see whether training learned something, independently of the random batches of the training loop.
    """

    def __init__(self, demo: DemoPaths, images: Path, timesteps: tuple[int, ...] = (100, 300, 500, 700, 900)) -> None:
        from PIL import Image

        self.model = load_base_model(str(demo.model))
        generator = torch.Generator().manual_seed(0)
        pictures = sorted(next(images.iterdir()).glob("*.png"))
        pixels = torch.stack([
            torch.from_numpy(numpy.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 127.5 - 1
            for path in pictures
        ])
        captions = [path.with_suffix(".txt").read_text(encoding="utf-8").strip() for path in pictures]
        with torch.no_grad():
            latents = self.model.vae.encode(pixels).latent_dist.mean * self.model.vae.config.scaling_factor
        count = len(timesteps)
        self.latents = latents.repeat_interleave(count, dim=0)
        self.captions = [caption for caption in captions for _ in range(count)]
        self.timesteps = torch.tensor(timesteps * len(pictures))
        self.noise = torch.randn(self.latents.shape, generator=generator)
        self.scheduler = make_noise_scheduler(v_parameterization=False)

    @torch.no_grad()
    def loss(self, lora_path: Path | None) -> float:
        network = None
        if lora_path is not None:
            network = LoRANetwork.from_weights(self.model.text_encoder, self.model.unet, lora_path)
            network.apply_to()
        try:
            ids = tokenize(self.model.tokenizer, self.captions, None, False)
            context = encode_tokens(self.model.text_encoder, ids, clip_skip=None, max_token_length=None, v2=False)
            noisy = self.scheduler.add_noise(self.latents, self.noise, self.timesteps)
            prediction = self.model.unet(noisy, self.timesteps, context).sample
            return torch.nn.functional.mse_loss(prediction, self.noise).item()
        finally:
            if network is not None:
                network.restore()
