"""Smaller copies of a folder of training images at several sizes, with sd-scripts'
`tools/resize_images_to_resolution.py` options, one output folder per size as the original popup made them.

For each size WxH: an image with more pixels than W*H is scaled by sqrt(W*H / pixels) (aspect ratio kept), both
sides are floored to `--divisible_by` by a centred crop, and it is saved as `<dst>/<WxH>/<name>.png` (or .jpg at
quality 100). Each size is made from the original (sd-scripts reuses the previous size's result). With
`--copy_associated_files` the files that share an image's name (captions, .npz...) are copied beside each copy under
the same name, so each size folder trains as it is. The originals are only read; no output file is ever replaced
(existing ones are reported before anything is written); an image that cannot be read is reported and skipped.
"""

from __future__ import annotations

import argparse
import glob
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sd_scripts.errors import UserFacingError
from sd_scripts.saving.atomic import write_atomically
from sd_scripts.tools.cli import Progress, no_progress, run_cli, tqdm_progress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # sd-scripts' train_util image extensions
DEFAULT_RESOLUTIONS = "512x512,384x384,256x256,128x128"
POPUP_SIZES = ("832x832", "768x768", "512x512", "384x384", "256x256", "128x128")  # the original popup's choices
INTERPOLATIONS = {"area": Image.Resampling.BOX, "cubic": Image.Resampling.BICUBIC,
                  "lanczos4": Image.Resampling.LANCZOS}


@dataclass
class ImageResizeResult:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (image, why)

    def report(self) -> str:
        lines = [f"{len(self.written)} files written."]
        lines += [f"Skipped {path.name}: {why}" for path, why in self.skipped]
        return "\n".join(lines)


def parse_resolutions(text: str) -> list[tuple[int, int]]:
    """"768x768,512x512" -> [(768, 768), (512, 512)], with one sentence for a size that is not WxH."""
    sizes = []
    for item in text.split(","):
        width, _, height = item.strip().lower().partition("x")
        if not (width.isdigit() and height.isdigit()) or int(width) == 0 or int(height) == 0:
            raise UserFacingError(f"'{item.strip()}' is not a size like 512x512; write the sizes as WxH, "
                                  "separated by commas.")
        sizes.append((int(width), int(height)))
    return sizes


def target_size(width: int, height: int, max_pixels: int, divisible_by: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((scaled width, height), (final width, height)): scaled to at most `max_pixels`, then floored to the divisor."""
    if width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
        width, height = int(width * scale), int(height * scale)
    return (width, height), (width - width % divisible_by, height - height % divisible_by)


def resize_images(
    src_img_folder: str | Path,
    dst_img_folder: str | Path,
    max_resolution: str = DEFAULT_RESOLUTIONS,
    *,
    divisible_by: int = 1,
    interpolation: str | None = None,
    save_as_png: bool = False,
    copy_associated_files: bool = False,
    progress: Progress = no_progress,
) -> ImageResizeResult:
    """Write the resized copies (see the module docstring); returns what was written and what was skipped."""
    source, destination = Path(src_img_folder), Path(dst_img_folder)
    if not source.is_dir():
        raise UserFacingError(f"The image folder {source} does not exist; choose the folder with your images.")
    if divisible_by < 1:
        raise UserFacingError("divisible_by must be 1 or more; 64 suits Stable Diffusion buckets.")
    sizes = parse_resolutions(max_resolution)
    images = sorted(path for path in source.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not images:
        raise UserFacingError(f"{source} holds no images ({', '.join(IMAGE_SUFFIXES)}); choose the folder that "
                              "holds them.")
    suffix = ".png" if save_as_png else ".jpg"
    companions = {image: _companions(image) if copy_associated_files else [] for image in images}
    planned = [_size_folder(destination, size) / name for size in sizes for image in images
               for name in [image.stem + suffix] + [companion.name for companion in companions[image]]]
    existing = [path for path in planned if path.exists()]
    if existing:
        raise UserFacingError(f"{existing[0]} already exists ({len(existing)} of the outputs do); choose an empty "
                              "destination folder.")
    resample = INTERPOLATIONS[interpolation or "area"]
    result = ImageResizeResult()
    for index, image_path in enumerate(images):
        try:
            with Image.open(image_path) as opened:
                image = opened.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as error:
            result.skipped.append((image_path, f"it could not be read as an image ({error})"))
            continue
        for width, height in sizes:
            folder = _size_folder(destination, (width, height))
            folder.mkdir(parents=True, exist_ok=True)
            (scaled_w, scaled_h), (final_w, final_h) = target_size(*image.size, width * height, divisible_by)
            if final_w == 0 or final_h == 0:
                result.skipped.append((image_path, f"it is too small for sides divisible by {divisible_by}"))
                continue
            scaled = image.resize((scaled_w, scaled_h), resample) if (scaled_w, scaled_h) != image.size else image
            left, top = (scaled_w - final_w) // 2, (scaled_h - final_h) // 2
            cropped = scaled.crop((left, top, left + final_w, top + final_h))
            output = folder / (image_path.stem + suffix)
            write_atomically(output, lambda path, picture=cropped: picture.save(
                path, format="PNG" if save_as_png else "JPEG", quality=100))
            result.written.append(output)
            for companion in companions[image_path]:
                copy = folder / companion.name
                write_atomically(copy, lambda path, original=companion: shutil.copyfile(original, path))
                result.written.append(copy)
        progress(index + 1, len(images), image_path.name)
    return result


def _companions(image: Path) -> list[Path]:
    """Files beside `image` with its name and another, non-image suffix (its caption, for one)."""
    return sorted(path for path in image.parent.glob(f"{glob.escape(image.stem)}.*")
                  if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES)


def _size_folder(destination: Path, size: tuple[int, int]) -> Path:
    return destination / f"{size[0]}x{size[1]}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sd_scripts.tools.image_resize",
        description="Resized copies of a folder of images, one folder per size "
                    "(sd-scripts' resize_images_to_resolution.py options).")
    parser.add_argument("src_img_folder", help="the folder with the images (never changed)")
    parser.add_argument("dst_img_folder", help="where the <WxH> folders are made")
    parser.add_argument("--max_resolution", default=DEFAULT_RESOLUTIONS,
                        help='the sizes, e.g. "768x768,512x512": each copy has at most that many pixels')
    parser.add_argument("--divisible_by", type=int, default=1, help="crop both sides to a multiple of this (64 for "
                                                                     "SD buckets)")
    parser.add_argument("--interpolation", choices=tuple(INTERPOLATIONS), default=None,
                        help="resampling filter (default area)")
    parser.add_argument("--save_as_png", action="store_true", help="save PNG instead of JPEG (quality 100)")
    parser.add_argument("--copy_associated_files", action="store_true",
                        help="copy each image's same-named files (captions) beside its copies")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, _run)


def _run(arguments: argparse.Namespace) -> None:
    result = resize_images(arguments.src_img_folder, arguments.dst_img_folder, arguments.max_resolution,
                           divisible_by=arguments.divisible_by, interpolation=arguments.interpolation,
                           save_as_png=arguments.save_as_png, copy_associated_files=arguments.copy_associated_files,
                           progress=tqdm_progress("resizing images", unit="image"))
    print(result.report())


if __name__ == "__main__":
    raise SystemExit(main())
