"""One image folder ("subset"): its images, their sizes and captions, read as sd-scripts' DreamBooth dataset does.

Reading a subset opens each image only far enough to learn its size and check it is intact; pixels are decoded
later, batch by batch. Captions come from `<image stem><caption_extension>` (UTF-8, first line), else from the
folder's class tokens, else they are empty.

Reading never stops at the first problem: what blocks training (a caption that is not UTF-8, a folder that vanished)
is added to `problems`, what only deserves a look (a damaged image, which is skipped) to `warnings`, and the scan
reports all of them at once. Sizes are the upright sizes: a photo whose EXIF orientation says "rotated" is trained
the way a viewer shows it (`images.load_rgb` turns it), where sd-scripts trains the stored pixels.
"""

from __future__ import annotations

import codecs
import re
import struct
import warnings as python_warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from sd_scripts.dataset.settings import SubsetOptions
from sd_scripts.untrusted import shown

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # compared lower-cased: any case is accepted
# Pictures people keep beside their images that neither trainer reads; named in a warning instead of ignored.
OTHER_PICTURE_EXTENSIONS = (".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jfif", ".jxl", ".psd")
# Pillow's own limit against decompression bombs (about 89 megapixels, 9459 x 9459): larger images are skipped
# from the header alone, before anything is decoded.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
TINY_IMAGE_SIDE = 64  # below this many pixels on a side an image is enlarged many times to train
EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations whose upright picture swaps width and height
# A caption is the first line of its file; only this much of a file is read, and a first line is cut at this many
# characters (far beyond the 225 tokens the text encoder reads), so a huge file cannot fill the memory or the
# LoRA's tag metadata.
CAPTION_READ_BYTES = 64 * 1024
MAX_CAPTION_CHARS = 2000
NAMES_SHOWN = 20  # file names listed in one warning or problem before "and N more"


@dataclass
class ImageRecord:
    """One training image as the plan knows it; `num_repeats` is 0 for a regularization image left unused."""

    path: Path
    size: tuple[int, int]  # (width, height) upright, as a viewer shows it (EXIF orientation applied)
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


def read_subset(subset: Subset, subset_index: int, warnings: list[str], problems: list[str]) -> None:
    """Fill `subset.images` and its statistics; skipped images become warnings, blocking mistakes problems."""
    extension = subset.options.caption_extension
    folder = subset.image_dir
    try:
        entries = sorted(folder.iterdir(), key=str)
    except OSError:
        problems.append(f"The image folder {folder} cannot be read any more (it was moved or deleted, or its drive "
                        "was disconnected); reconnect or restore it and try again.")
        return
    image_paths = [path for path in entries if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()]
    image_stems = {path.stem for path in image_paths}
    found = _Findings()
    for path in image_paths:
        header = _image_header(path, found)
        if header is None:
            subset.unreadable_images.append(path)
            continue
        caption_path = path.with_name(path.stem + extension)
        try:
            caption = read_caption(caption_path)
        except CaptionProblem as problem:
            problem.kind(found).append(caption_path.name)
            caption = ""  # training will not start; the image is still counted with its caption file
        else:
            if caption is not None and len(caption) > MAX_CAPTION_CHARS:
                found.long_captions.append(caption_path.name)
                caption = caption[:MAX_CAPTION_CHARS]
            elif caption is not None and not re.search(r"\w", caption):
                found.wordless_captions.append(caption_path.name)
        if caption is None:
            subset.images_without_caption.append(path)
            caption = subset.class_tokens or ""
        else:
            subset.captions_found += 1
        subset.images.append(ImageRecord(path, header, caption, subset.num_repeats, subset.is_reg, subset_index))
    if extension:
        subset.captions_without_image = sorted(
            path for path in entries
            if path.is_file() and path.name.endswith(extension) and path.name[: -len(extension)] not in image_stems
        )
    _other_entries(entries, found)
    found.report(subset, warnings, problems)
    empty_captions = [record.path.name for record in subset.images
                      if not record.caption and record.path in subset.images_without_caption]
    if empty_captions:
        warnings.append(
            f"{len(empty_captions)} image(s) in {folder} have neither a caption file nor class tokens "
            f"and are trained with an empty caption: {_first_names(empty_captions)}."
        )
    elif subset.images_without_caption:
        warnings.append(
            f"{len(subset.images_without_caption)} image(s) in {folder} have no {extension} caption file and "
            f"use the folder's class tokens '{subset.class_tokens}' as caption."
        )


@dataclass
class _Findings:
    """What reading one folder found, named file by file, turned into one sentence per kind of finding."""

    damaged: list[str] = field(default_factory=list)
    too_large: list[str] = field(default_factory=list)
    tiny: list[str] = field(default_factory=list)
    animated: list[str] = field(default_factory=list)
    transparent: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    not_utf8: list[str] = field(default_factory=list)
    unreadable_captions: list[str] = field(default_factory=list)
    wordless_captions: list[str] = field(default_factory=list)
    long_captions: list[str] = field(default_factory=list)
    other_pictures: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    nested: list[str] = field(default_factory=list)

    def report(self, subset: Subset, warnings: list[str], problems: list[str]) -> None:
        folder = subset.image_dir
        if len(self.not_utf8) == 1:
            problems.append(f"The caption file {folder / self.not_utf8[0]} is not UTF-8 text; open it in a text "
                            "editor and save it with UTF-8 encoding.")
        elif self.not_utf8:
            problems.append(f"{len(self.not_utf8)} caption files in {folder} are not UTF-8 text "
                            f"({_first_names(self.not_utf8)}); open each in a text editor and save it with UTF-8 "
                            "encoding.")
        if self.unreadable_captions:
            problems.append(f"The caption file(s) {_first_names(self.unreadable_captions)} in {folder} cannot be "
                            "read (moved, deleted or locked while being read); check them and try again.")
        if self.damaged:
            warnings.append(f"In {folder}, {_first_names(self.damaged)} cannot be read (damaged or not really an "
                            f"image) and {_are('is', self.damaged)} skipped.")
        if self.too_large:
            warnings.append(f"{_images(self.too_large)} in {folder} {_are('has', self.too_large)} more than "
                            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels, more than is safe to decode, and "
                            f"{_are('is', self.too_large)} skipped: {_first_names(self.too_large)}; shrink "
                            f"{_them(self.too_large)} (a side of 4096 pixels is plenty).")
        if self.tiny:
            warnings.append(f"{_images(self.tiny)} in {folder} {_are('is', self.tiny)} smaller than "
                            f"{TINY_IMAGE_SIDE} pixels on a side and {_are('is', self.tiny)} enlarged many times to "
                            f"train, which teaches blur: {_first_names(self.tiny)}.")
        if self.animated:
            warnings.append(f"{_images(self.animated)} in {folder} {_are('is', self.animated)} animated; only the "
                            f"first frame is trained: {_first_names(self.animated)}.")
        if self.transparent:
            warnings.append(f"{_images(self.transparent)} in {folder} {_are('has', self.transparent)} transparency, "
                            "which is dropped as sd-scripts drops it (the colour stored under the transparent parts "
                            f"is trained): {_first_names(self.transparent)}; put them on a background if that "
                            "matters.")
        if self.rotated:
            warnings.append(f"{_images(self.rotated)} in {folder} {_are('is', self.rotated)} stored sideways with an "
                            "EXIF orientation and {} trained upright, as viewers show {}: {}.".format(
                                _are("is", self.rotated), _them(self.rotated), _first_names(self.rotated)))
        if self.wordless_captions:
            warnings.append(f"{len(self.wordless_captions)} caption file(s) in {folder} hold no words (empty or "
                            f"only commas), so their images train without a caption: "
                            f"{_first_names(self.wordless_captions)}; write captions, or delete those files to "
                            "use the folder's class tokens.")
        if self.long_captions:
            warnings.append(f"{len(self.long_captions)} caption(s) in {folder} are longer than {MAX_CAPTION_CHARS} "
                            "characters and are cut there (the text encoder reads at most 225 tokens): "
                            f"{_first_names(self.long_captions)}.")
        if self.other_pictures:
            warnings.append(f"{len(self.other_pictures)} file(s) in {folder} are pictures of a kind that is not "
                            f"trained (only PNG, JPG, WEBP and BMP are): {_first_names(self.other_pictures)}; "
                            "convert them to PNG to use them.")
        if self.broken_links:
            warnings.append(f"{len(self.broken_links)} link(s) in {folder} point to no file (or to themselves) and "
                            f"are skipped: {_first_names(self.broken_links)}.")
        if self.nested:
            warnings.append(f"The folder {folder} has subfolders with images that are not trained (only images "
                            f"directly inside a numbered folder are): {_first_names(self.nested)}; move them up, "
                            "or give them a numbered folder of their own beside it.")


def _image_header(path: Path, found: _Findings) -> tuple[int, int] | None:
    """The upright (width, height) of an intact image, read from its header; None (and a finding) when it is
    skipped. Nothing is decoded: a 20000 x 20000 header is refused by its numbers alone."""
    try:
        with python_warnings.catch_warnings():
            python_warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    found.too_large.append(f"{path.name} ({width}x{height})")
                    return None
                animated = bool(getattr(image, "is_animated", False))
                transparent = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
                orientation = exif_orientation(image)
                image.verify()
    except Image.DecompressionBombError:
        found.too_large.append(path.name)
        return None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError):
        found.damaged.append(path.name)
        return None
    if min(width, height) < TINY_IMAGE_SIDE:
        found.tiny.append(f"{path.name} ({width}x{height})")
    if animated:
        found.animated.append(path.name)
    if transparent:
        found.transparent.append(path.name)
    if orientation in TRANSPOSED_ORIENTATIONS:
        found.rotated.append(path.name)
        return height, width
    if orientation not in (1, None):
        found.rotated.append(path.name)
    return width, height


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright) from the EXIF the header carries, without decoding or reading further
    (JPEG and WEBP carry it before the pixels; a PNG's eXIf chunk usually does too); 1 when unreadable."""
    raw = image.info.get("exif")
    if not raw:
        return 1
    try:
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(EXIF_ORIENTATION, 1))
    except (OSError, SyntaxError, ValueError, TypeError, struct.error):
        return 1


def _other_entries(entries: list[Path], found: _Findings) -> None:
    """Pictures of other kinds, links to nothing, and subfolders holding images: everything a user may expect to be
    trained that is not. Subfolders are looked into one level only, so a link loop cannot make this endless."""
    for path in entries:
        suffix = path.suffix.lower()
        if suffix in OTHER_PICTURE_EXTENSIONS:
            found.other_pictures.append(path.name)
        elif suffix in IMAGE_EXTENSIONS and path.is_symlink() and not path.is_file():
            found.broken_links.append(path.name)
        elif path.is_dir():
            try:
                if any(child.suffix.lower() in IMAGE_EXTENSIONS for child in path.iterdir()):
                    found.nested.append(path.name)
            except OSError:  # a link loop or a folder we may not list: nothing in it is trained either way
                continue


def list_images(folder: Path) -> list[Path]:
    """The images directly inside `folder`, sorted by name as sd-scripts' `glob_images` sorts them."""
    return sorted(
        (path for path in folder.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()),
        key=str,
    )


class CaptionProblem(Exception):
    """A caption file that is there but cannot be used; `kind` picks the findings list that names it."""

    def __init__(self, kind: Callable[[_Findings], list[str]]) -> None:
        super().__init__()
        self.kind = kind


def read_caption(path: Path) -> str | None:
    """The first line of a UTF-8 caption file (a byte-order mark is dropped), None when there is no file; at most
    CAPTION_READ_BYTES are read. Raises CaptionProblem for a file that is not UTF-8 or cannot be read."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            data = handle.read(CAPTION_READ_BYTES)
            complete = len(data) < CAPTION_READ_BYTES or not handle.read(1)
    except OSError:
        raise CaptionProblem(lambda found: found.unreadable_captions) from None
    first_line, newline, _ = data.partition(b"\n")
    try:  # a file cut by the read limit may end inside a character: the incremental decoder waits for the rest
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(first_line, final=complete or bool(newline))
    except UnicodeDecodeError:
        raise CaptionProblem(lambda found: found.not_utf8) from None
    return text.strip()


def _images(names: list[str]) -> str:
    return "1 image" if len(names) == 1 else f"{len(names)} images"


def _are(verb: str, names: list[str]) -> str:
    return verb if len(names) == 1 else {"is": "are", "has": "have"}[verb]


def _them(names: list[str]) -> str:
    return "it" if len(names) == 1 else "them"


def _first_names(names: list[str], shown_count: int = NAMES_SHOWN) -> str:
    listed = ", ".join(shown(name) for name in names[:shown_count])
    return listed if len(names) <= shown_count else f"{listed} and {len(names) - shown_count} more"
