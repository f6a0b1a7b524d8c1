"""Aspect-ratio buckets, computed exactly as sd-scripts' `make_bucket_resolutions` and `BucketManager`.

Every image is trained at the size of its bucket: it is scaled to cover the bucket and the overflow is cropped.
Three modes exist: a predefined list of buckets around the training area (`enable_bucket`), buckets made from each
image's own size without ever enlarging it (`bucket_no_upscale`), and one fixed size (no bucketing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def make_bucket_resolutions(
    resolution: tuple[int, int], min_size: int = 256, max_size: int = 1024, steps: int = 64
) -> list[tuple[int, int]]:
    """The sorted (width, height) buckets whose area stays within the training area, as sd-scripts lists them."""
    area = resolution[0] * resolution[1]
    square = int(math.sqrt(area) // steps) * steps
    resolutions = {(square, square)}
    width = min_size
    while width <= max_size:
        height = min(max_size, int((area // width) // steps) * steps)
        if height >= min_size:
            resolutions.add((width, height))
            resolutions.add((height, width))
        width += steps
    return sorted(resolutions)


@dataclass(frozen=True)
class BucketChoice:
    """Where one image goes: its bucket, the size it is resized to before cropping, and the aspect-ratio error."""

    bucket: tuple[int, int]  # (width, height) after cropping
    resized_size: tuple[int, int]  # (width, height) before cropping
    ar_error: float  # bucket aspect ratio minus image aspect ratio


def select_predefined_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> BucketChoice:
    """The image's own size when it is a bucket, else the bucket with the nearest aspect ratio; scale to cover it.

    Ties go to the first bucket in sorted order, as numpy's argmin does in sd-scripts.
    """
    width, height = size
    aspect_ratio = width / height
    if size in buckets:
        bucket = size
    else:
        bucket = min(buckets, key=lambda reso: abs(reso[0] / reso[1] - aspect_ratio))
    if aspect_ratio > bucket[0] / bucket[1]:
        scale = bucket[1] / height  # the image is wider: match heights, crop the sides
    else:
        scale = bucket[0] / width  # the image is taller: match widths, crop top and bottom
    resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    return BucketChoice(bucket, resized, bucket[0] / bucket[1] - aspect_ratio)


def select_no_upscale_bucket(size: tuple[int, int], max_area: int, steps: int) -> BucketChoice:
    """sd-scripts' `bucket_no_upscale`: shrink images larger than the area to it, never enlarge, floor to steps.

    An image narrower than one step gets a zero-sized bucket; the scan reports such images as too small.
    """
    width, height = size
    aspect_ratio = width / height
    if width * height > max_area:
        resized_width = math.sqrt(max_area * aspect_ratio)
        resized_height = max_area / resized_width

        # Round either the width or the height to the steps, whichever keeps the aspect ratio better.
        width_rounded = _round_to_steps(resized_width, steps)
        height_for_width = _round_to_steps(width_rounded / aspect_ratio, steps)
        height_rounded = _round_to_steps(resized_height, steps)
        width_for_height = _round_to_steps(height_rounded * aspect_ratio, steps)
        error_width_rounded = _ar_error(width_rounded, height_for_width, aspect_ratio)
        error_height_rounded = _ar_error(width_for_height, height_rounded, aspect_ratio)
        if error_width_rounded < error_height_rounded:
            resized = (width_rounded, int(width_rounded / aspect_ratio + 0.5))
        else:
            resized = (int(height_rounded * aspect_ratio + 0.5), height_rounded)
    else:
        resized = (width, height)
    bucket = (resized[0] - resized[0] % steps, resized[1] - resized[1] % steps)
    return BucketChoice(bucket, resized, bucket[0] / bucket[1] - aspect_ratio)


def select_fixed_size(size: tuple[int, int], resolution: tuple[int, int]) -> BucketChoice:
    """No bucketing with random_crop: the image keeps its size and is cut to the resolution (the caller checks it is
    not smaller), as sd-scripts' loader does; without random_crop it is scaled to cover, as with one bucket."""
    return BucketChoice(resolution, size, resolution[0] / resolution[1] - size[0] / size[1])


def crop_ltrb(bucket: tuple[int, int], original_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """sd-scripts' `get_crop_ltrb` (Stability AI's crop convention), stored in latent cache files for compatibility."""
    bucket_ar = bucket[0] / bucket[1]
    image_ar = original_size[0] / original_size[1]
    if bucket_ar > image_ar:
        resized_width, resized_height = bucket[1] * image_ar, bucket[1]
    else:
        resized_width, resized_height = bucket[0], bucket[0] / image_ar
    left = (bucket[0] - resized_width) // 2
    top = (bucket[1] - resized_height) // 2
    return left, top, left + resized_width, top + resized_height


def size_conditioning(
    original_size: tuple[int, int], bucket: tuple[int, int], flipped: bool
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """SDXL's (original h, w), (crop top, left), (target h, w) of one image, as sd-scripts records them.

    The original size is the image file's, the crop `crop_ltrb`'s left and top (for a mirrored image the left is the
    bucket width minus the crop's right), the target the bucket; each truncated to an int as sd-scripts does. A random
    crop does not change them (sd-scripts: "no idea how to reflect" it). Without buckets sd-scripts records an
    uncached, randomly cropped image as its cut size with crop 0; this trainer keeps the one rule for every image.
    """
    left, top, right, _ = crop_ltrb(bucket, original_size)
    if flipped:
        left = bucket[0] - right
    return (original_size[1], original_size[0]), (int(top), int(left)), (bucket[1], bucket[0])


def _round_to_steps(value: float, steps: int) -> int:
    rounded = int(value + 0.5)
    return rounded - rounded % steps


def _ar_error(width: int, height: int, aspect_ratio: float) -> float:
    return abs(width / height - aspect_ratio) if height > 0 else math.inf
