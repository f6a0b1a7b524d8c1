"""Turning one image file into the pixels of its bucket: resize to cover, crop, color jitter, flip.

Resizing uses Pillow: `Image.BOX` (pixel-area averaging, the equivalent of OpenCV's INTER_AREA that sd-scripts uses)
when the image shrinks, `Image.LANCZOS` when it grows (sd-scripts' choice for enlarging). Arrays are height x width
x RGB, uint8, as sd-scripts handles them before `ToTensor`.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sd_scripts.dataset.subsets import exif_orientation
from sd_scripts.errors import UserFacingError

HUE_SHIFT_LIMIT = 8  # sd-scripts' limit, in OpenCV hue units (half-degrees of a 180-unit circle)
GAMMA_RANGE = (0.95, 1.05)
COLOR_AUG_PROBABILITY = 0.33


def load_rgb(path: Path) -> Image.Image:
    """The image as RGB, upright as its EXIF orientation says (the scan reads the same upright size); an alpha
    channel is dropped, as sd-scripts drops it; 16-bit greys are scaled to 8 bits (Pillow's own conversion clips
    them to white). A damaged file is named in the error."""
    try:
        with Image.open(path) as image:
            image.load()
            if exif_orientation(image) != 1:
                image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise UserFacingError(
            f"The image {path} cannot be read (damaged or not really an image); remove or replace it."
        ) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode a PNG, JPEG, WEBP or BMP opens in (CMYK, palette, grey, 16-bit grey, with alpha)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):  # 16-bit greys ("I;16", or "I" holding 0-65535)
        grey = np.clip(np.asarray(image, dtype=np.float64) / 257.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # as Pillow asks for palette transparency; the alpha is dropped next
    return image.convert("RGB")


def fit_to_bucket(
    image: Image.Image,
    bucket: tuple[int, int],
    resized_size: tuple[int, int],
    crop_rng: random.Random | None = None,
) -> np.ndarray:
    """Resize to `resized_size` (which covers the bucket) and crop the overflow: centered, or at an offset drawn
    from `crop_rng` (random_crop)."""
    if image.size != resized_size:
        shrinking = image.width >= resized_size[0] and image.height >= resized_size[1]
        image = image.resize(resized_size, Image.BOX if shrinking else Image.LANCZOS)
    pixels = np.asarray(image)
    width, height = bucket
    if pixels.shape[1] > width:
        overflow = pixels.shape[1] - width
        left = crop_rng.randint(0, overflow) if crop_rng else overflow // 2
        pixels = pixels[:, left : left + width]
    if pixels.shape[0] > height:
        overflow = pixels.shape[0] - height
        top = crop_rng.randint(0, overflow) if crop_rng else overflow // 2
        pixels = pixels[top : top + height]
    return pixels


def color_jitter(pixels: np.ndarray, rng: random.Random) -> np.ndarray:
    """sd-scripts' color_aug: with p=0.33, either a hue shift of up to 8/180 of the circle or a gamma of 0.95-1.05.

    Like sd-scripts, the gamma is applied to the 0-255 values themselves (a slight brightness change) and clipped.
    """
    if rng.random() > COLOR_AUG_PROBABILITY:
        return pixels
    if rng.random() > 0.5:
        shift = rng.uniform(-HUE_SHIFT_LIMIT, HUE_SHIFT_LIMIT)
        hsv = np.array(Image.fromarray(pixels).convert("HSV"))
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + round(shift / 180 * 256)) % 256
        return np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB"))
    gamma = rng.uniform(*GAMMA_RANGE)
    return np.clip(pixels.astype(np.float64) ** gamma, 0, 255).astype(np.uint8)


def flip_horizontally(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels[:, ::-1])
