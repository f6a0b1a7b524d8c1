"""Helpers for the dataset tests: small images and caption files written into pytest's tmp_path."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from sd_scripts.dataset import DatasetSettings


def write_image(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A noise image of (width, height), different per seed, so crops and flips change the pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_folder(
    folder: Path,
    sizes: list[tuple[int, int]],
    captions: list[str | None] | None = None,
    extension: str = ".png",
    caption_extension: str = ".txt",
) -> list[Path]:
    """Images img00..imgNN of the given sizes, each with its caption file unless the caption is None."""
    captions = captions or [None] * len(sizes)
    paths = []
    for number, (size, caption) in enumerate(zip(sizes, captions)):
        seed = zlib.crc32(f"{folder.name}/{number}".encode())
        path = write_image(folder / f"img{number:02d}{extension}", size, seed=seed)
        if caption is not None:
            path.with_suffix(caption_extension).write_text(caption, encoding="utf-8")
        paths.append(path)
    return paths


def settings_for(train_data_dir: Path, **overrides) -> DatasetSettings:
    """Settings with captions in .txt and a fixed seed, as the tests want them unless they say otherwise."""
    values = {"train_data_dir": str(train_data_dir), "caption_extension": ".txt", "seed": 42}
    values.update(overrides)
    return DatasetSettings(**values)
