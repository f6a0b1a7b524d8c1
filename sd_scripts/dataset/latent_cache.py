"""Latent caching: encode every training image once, in memory or in sd-scripts' `.npz` files next to the images.

A cached latent is the image fitted to its bucket with a centered crop and no color change, so caching is impossible
with `color_aug` or `random_crop` (`ensure_latents_cacheable` says so in one sentence). With `flip_aug` the mirrored
image is encoded too. Disk files are the ones sd-scripts' SD1/SD2 caching strategy reads and writes: an old
`<stem>.npz` when one exists, else `<stem>_<WWWW>x<HHHH>_sd.npz` after the original image size, holding `latents`,
`original_size`, `crop_ltrb` and, with flip_aug, `latents_flipped` (no `_<h>x<w>` key suffix: that is only for
sd-scripts' multi-resolution models, FLUX and SD3), so a cache written by either trainer is reused by the other.
SDXL's files end in `_sdxl.npz` instead, as sd-scripts names them (its VAE gives other latents). A file
whose latents have the bucket's size (and the flipped ones when needed) is reused; any other is encoded again.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from sd_scripts.dataset.batches import pixels_to_tensor
from sd_scripts.dataset.buckets import crop_ltrb
from sd_scripts.dataset.images import fit_to_bucket, load_rgb
from sd_scripts.dataset.plan import DatasetPlan
from sd_scripts.dataset.subsets import ImageRecord
from sd_scripts.errors import UserFacingError

if TYPE_CHECKING:
    from torch import Tensor

LATENT_STRIDE = 8  # the SD VAE's downscaling factor


@dataclass
class LatentCache:
    """The latents of every image in use, by index into plan.images: tensors in memory, or the .npz that hold them."""

    in_memory: dict[int, tuple[Tensor, Tensor | None]] = field(default_factory=dict)  # (latents, flipped latents)
    on_disk: dict[int, Path] = field(default_factory=dict)  # the npz that holds them

    def get(self, image_index: int, flipped: bool) -> Tensor:
        """The [C, h, w] latents of one image, of its mirror image when `flipped`."""
        import torch

        if image_index in self.in_memory:
            latents, latents_flipped = self.in_memory[image_index]
            return latents_flipped if flipped else latents
        with np.load(self.on_disk[image_index]) as npz:
            return torch.from_numpy(npz["latents_flipped" if flipped else "latents"].copy())


def ensure_latents_cacheable(plan: DatasetPlan) -> None:
    """Raise a one-sentence UserFacingError when a subset's augmentation changes pixels every epoch."""
    for dataset in plan.datasets:
        for subset in dataset.subsets:
            if subset.options.color_aug or subset.options.random_crop:
                change = "color augmentation" if subset.options.color_aug else "random crop"
                raise UserFacingError(
                    f"Latents cannot be cached while {change} is on for {subset.image_dir}; turn off one of the two."
                )


def latents_npz_path(image: ImageRecord, sdxl: bool = False) -> Path:
    """sd-scripts' cache file: `<stem>.npz` of its first versions when there is one, else the image stem, its
    original size and `_sd.npz` (`_sdxl.npz` for SDXL)."""
    old = image.path.with_suffix(".npz")
    if old.is_file():
        return old
    width, height = image.size
    return image.path.with_name(f"{image.path.stem}_{width:04d}x{height:04d}_{'sdxl' if sdxl else 'sd'}.npz")


def cache_latents(
    plan: DatasetPlan,
    encode: Callable[[Tensor], Tensor],
    to_disk: bool,
    *,
    vae_batch_size: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
    sdxl: bool = False,
) -> LatentCache:
    """Encode every image in use, batched by bucket (`vae_batch_size` at a time), and return the cache.

    `encode` maps pixels [B, 3, H, W] in [-1, 1] to latents [B, C, H/8, W/8] (moving them to the VAE's device and
    dtype itself); sd-scripts stores a sample of the latent distribution, not yet multiplied by the scaling factor.
    `on_progress(done, total)` is called after every encoded batch.
    """
    import torch

    ensure_latents_cacheable(plan)
    cache = LatentCache()
    to_encode: list[tuple[int, bool]] = []  # (image index, with flipped twin)
    for dataset in plan.datasets:
        for index in sorted({entry for bucket in dataset.buckets for entry in bucket.entries}):
            image = plan.images[index]
            flip = plan.subsets[image.subset_index].options.flip_aug
            if to_disk and npz_is_valid(latents_npz_path(image, sdxl), image.bucket, flip):
                cache.on_disk[index] = latents_npz_path(image, sdxl)
            else:
                to_encode.append((index, flip))
    to_encode.sort(key=lambda item: plan.images[item[0]].bucket[0] * plan.images[item[0]].bucket[1])
    groups = _group_by_bucket(plan, to_encode, vae_batch_size)
    for done, group in enumerate(groups, start=1):
        images = [plan.images[index] for index, _ in group]
        pixels = torch.stack(
            [
                pixels_to_tensor(fit_to_bucket(load_rgb(image.path), image.bucket, image.resized_size))
                for image in images
            ]
        )
        flip = group[0][1]
        with torch.no_grad():
            latents = encode(pixels).float().cpu()
            latents_flipped = encode(torch.flip(pixels, dims=[3])).float().cpu() if flip else None
        for position, (index, _) in enumerate(group):
            image = plan.images[index]
            flipped = latents_flipped[position] if latents_flipped is not None else None
            if to_disk:
                path = latents_npz_path(image, sdxl)
                save_latents_npz(path, latents[position], flipped, image)
                cache.on_disk[index] = path
            else:
                cache.in_memory[index] = (latents[position].clone(), None if flipped is None else flipped.clone())
        if on_progress is not None:
            on_progress(done, len(groups))
    return cache


def npz_is_valid(path: Path, bucket: tuple[int, int], flip: bool) -> bool:
    """True when the file holds latents of the bucket's size (and the flipped ones when flip_aug needs them).

    sd-scripts checks only that the keys are there; the size is checked too, so a file cached at another
    resolution is encoded again instead of training on latents of the wrong size.
    """
    if not path.is_file():
        return False
    expected = (bucket[1] // LATENT_STRIDE, bucket[0] // LATENT_STRIDE)
    keys = ["latents"] + (["latents_flipped"] if flip else [])
    try:
        with np.load(path) as npz:
            return all(key in npz.files and npz[key].shape[-2:] == expected for key in keys)
    except (OSError, ValueError):
        return False


def save_latents_npz(path: Path, latents: Tensor, flipped: Tensor | None, image: ImageRecord) -> None:
    """Write (or update) the cache file atomically; other keys already in it (an alpha mask) are kept, as
    sd-scripts keeps them, but flipped latents of another size are dropped rather than left mismatched."""
    arrays = read_npz_arrays(path)
    arrays["latents"] = latents.numpy()
    arrays["original_size"] = np.array(image.size)
    arrays["crop_ltrb"] = np.array(crop_ltrb(image.bucket, image.size))
    if flipped is not None:
        arrays["latents_flipped"] = flipped.numpy()
    elif "latents_flipped" in arrays and arrays["latents_flipped"].shape != latents.shape:
        del arrays["latents_flipped"]
    write_npz_atomically(path, arrays)


def write_npz_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez through a temporary file, so an interrupted write never leaves a damaged cache file."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an existing cache file; nothing when it is missing or damaged (it is then rewritten)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError):
        return {}


def _group_by_bucket(
    plan: DatasetPlan, to_encode: list[tuple[int, bool]], batch_size: int
) -> list[list[tuple[int, bool]]]:
    """Consecutive images of the same bucket and flip setting, at most `batch_size` together (sd-scripts' rule)."""
    groups: list[list[tuple[int, bool]]] = []
    for item in to_encode:
        condition = (plan.images[item[0]].bucket, item[1])
        last = groups[-1] if groups else None
        if last and len(last) < batch_size and (plan.images[last[0][0]].bucket, last[0][1]) == condition:
            last.append(item)
        else:
            groups.append([item])
    return groups
