"""One image folder ("subset"): its images, their sizes and captions, read as sd-scripts' DreamBooth dataset does.

Reading a subset opens each image only far enough to learn its size and check it is intact; pixels are decoded
later, batch by batch. Captions come from `<image stem><caption_extension>` (UTF-8, first line), else from the
folder's class tokens, else they are empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from sd_scripts.dataset.settings import SubsetOptions
from sd_scripts.errors import UserFacingError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # compared lower-cased: any case is accepted


@dataclass
class ImageRecord:
    """One training image as the plan knows it; `num_repeats` is 0 for a regularization image left unused."""

    path: Path
    size: tuple[int, int]  # (width, height) as stored in the file
    caption: str
    num_repeats: int
    is_reg: bool
    subset_index: int  # position in DatasetPlan.subsets
    bucket: tuple[int, int] = (0, 0)  # (width, height) the image is trained at
    resized_size: tuple[int, int] = (0, 0)  # (width, height) before cropping to the bucket
    ar_error: float = 0.0


@dataclass
class Subset:
    """An image folder with its repeats, class tokens and options, plus what reading it found."""

    image_dir: Path
    num_repeats: int
    class_tokens: str | None
    is_reg: bool
    options: SubsetOptions
    images: list[ImageRecord] = field(default_factory=list)
    captions_found: int = 0
    images_without_caption: list[Path] = field(default_factory=list)
    captions_without_image: list[Path] = field(default_factory=list)
    unreadable_images: list[Path] = field(default_factory=list)

    @property
    def img_count(self) -> int:
        return len(self.images)

    @property
    def name(self) -> str:
        return self.image_dir.name


def read_subset(subset: Subset, subset_index: int, warnings: list[str]) -> None:
    """Fill `subset.images` and its statistics; unreadable images are skipped with a warning."""
    extension = subset.options.caption_extension
    image_paths = list_images(subset.image_dir)
    image_stems = {path.stem for path in image_paths}
    for path in image_paths:
        size = read_image_size(path)
        if size is None:
            subset.unreadable_images.append(path)
            warnings.append(f"The image {path} cannot be read (damaged or not really an image); it is skipped.")
            continue
        caption = read_caption(path.with_name(path.stem + extension))
        if caption is None:
            subset.images_without_caption.append(path)
            caption = subset.class_tokens or ""
        else:
            subset.captions_found += 1
        subset.images.append(ImageRecord(path, size, caption, subset.num_repeats, subset.is_reg, subset_index))
    if extension:
        subset.captions_without_image = sorted(
            path
            for path in subset.image_dir.iterdir()
            if path.is_file() and path.name.endswith(extension) and path.name[: -len(extension)] not in image_stems
        )
    empty_captions = [record.path.name for record in subset.images if not record.caption]
    if empty_captions:
        warnings.append(
            f"{len(empty_captions)} image(s) in {subset.image_dir} have neither a caption file nor class tokens "
            f"and are trained with an empty caption: {_first_names(empty_captions)}."
        )
    elif subset.images_without_caption:
        warnings.append(
            f"{len(subset.images_without_caption)} image(s) in {subset.image_dir} have no {extension} caption file and "
            f"use the folder's class tokens '{subset.class_tokens}' as caption."
        )


def list_images(folder: Path) -> list[Path]:
    """The images directly inside `folder`, sorted by name as sd-scripts' `glob_images` sorts them."""
    return sorted(
        (path for path in folder.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()),
        key=str,
    )


def read_image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header, after Pillow's integrity check; None when the file is not readable."""
    try:
        with Image.open(path) as image:
            size = image.size
            image.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return size


def read_caption(path: Path) -> str | None:
    """The first line of a UTF-8 caption file (a byte-order mark is dropped); None when there is no file."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserFacingError(
            f"The caption file {path} is not UTF-8 text; open it in a text editor and save it with UTF-8 encoding."
        ) from None
    return text.split("\n")[0].strip()


def _first_names(names: list[str], shown: int = 5) -> str:
    listed = ", ".join(names[:shown])
    return listed if len(names) <= shown else f"{listed} and {len(names) - shown} more"
