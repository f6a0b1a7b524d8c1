"""`load_batch`: the pixels (or cached latents), captions and loss weights of one batch.

All randomness of a batch (flip, random crop, color jitter, caption dropout and shuffling) comes from one
`random.Random` seeded with the plan's seed, the epoch and the batch's position, never from a worker's state, so the
same seed gives the same batches on every run, with any number of DataLoader workers (`sd_scripts.dataset.loader`),
and a resumed run sees what an uninterrupted one would have seen. The draws per image follow
sd-scripts' order: flip, crop, color, caption.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sd_scripts.dataset.buckets import size_conditioning
from sd_scripts.dataset.captions import process_caption
from sd_scripts.dataset.epochs import BatchSpec
from sd_scripts.dataset.images import color_jitter, fit_to_bucket, flip_horizontally, load_rgb
from sd_scripts.dataset.plan import DatasetPlan

if TYPE_CHECKING:
    from torch import Tensor

    from sd_scripts.dataset.latent_cache import LatentCache


@dataclass
class Batch:
    """One training batch; exactly one of `pixels` and `latents` is set."""

    captions: list[str]
    loss_weights: Tensor  # [B] float32: prior_loss_weight for regularization images, else 1
    pixels: Tensor | None  # [B, 3, H, W] float32 in [-1, 1]
    latents: Tensor | None  # [B, C, H/8, W/8] float32, as the cache's encode returned them
    image_paths: list[Path]
    image_indices: list[int]  # into plan.images (the text-encoder output cache is looked up by them)
    # SDXL's size conditioning, [B, 2] int64 each (sd-scripts' batch keys); every family's batch carries them.
    original_sizes_hw: Tensor
    crop_top_lefts: Tensor
    target_sizes_hw: Tensor

    def pin_memory(self) -> Batch:
        """A copy in page-locked memory, which the DataLoader's pin_memory=True asks for (CUDA copies it sooner)."""
        return replace(
            self,
            loss_weights=self.loss_weights.pin_memory(),
            pixels=None if self.pixels is None else self.pixels.pin_memory(),
            latents=None if self.latents is None else self.latents.pin_memory(),
        )


def batch_rng(plan: DatasetPlan, epoch: int, batch_index: int) -> random.Random:
    return random.Random(f"{plan.seed}/{epoch}/{batch_index}")


def load_batch(
    plan: DatasetPlan, spec: BatchSpec, epoch: int, global_step: int, latent_cache: LatentCache | None = None
) -> Batch:
    """Load and augment the images of `spec` for `epoch` (1-based); `global_step` drives the token warmup."""
    import torch

    rng = batch_rng(plan, epoch, spec.index)
    captions: list[str] = []
    weights: list[float] = []
    images: list[Tensor] = []
    sizes: list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = []
    for image_index in spec.images:
        image = plan.images[image_index]
        options = plan.subsets[image.subset_index].options
        flipped = options.flip_aug and rng.random() < 0.5
        if latent_cache is not None:
            images.append(latent_cache.get(image_index, flipped))
        else:
            crop_rng = rng if options.random_crop else None
            pixels = fit_to_bucket(load_rgb(image.path), image.bucket, image.resized_size, crop_rng)
            if options.color_aug:
                pixels = color_jitter(pixels, rng)
            if flipped:
                pixels = flip_horizontally(pixels)
            images.append(pixels_to_tensor(pixels))
        sizes.append(size_conditioning(image.size, image.bucket, flipped))
        captions.append(
            process_caption(
                image.caption, options, epoch=epoch, step=global_step, max_train_steps=plan.max_train_steps, rng=rng
            )
        )
        weights.append(plan.loss_weight(image_index, spec.dataset_index))
    stacked = torch.stack(images).contiguous().float()
    return Batch(
        captions=captions,
        loss_weights=torch.tensor(weights, dtype=torch.float32),
        pixels=None if latent_cache is not None else stacked,
        latents=stacked if latent_cache is not None else None,
        image_paths=[plan.images[index].path for index in spec.images],
        image_indices=list(spec.images),
        original_sizes_hw=torch.tensor([original for original, _, _ in sizes], dtype=torch.int64),
        crop_top_lefts=torch.tensor([crop for _, crop, _ in sizes], dtype=torch.int64),
        target_sizes_hw=torch.tensor([target for _, _, target in sizes], dtype=torch.int64),
    )


def pixels_to_tensor(pixels: np.ndarray) -> Tensor:
    """H x W x RGB uint8 -> 3 x H x W float32 in [-1, 1] (torchvision's ToTensor then Normalize(0.5, 0.5))."""
    import torch

    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 127.5 - 1.0
