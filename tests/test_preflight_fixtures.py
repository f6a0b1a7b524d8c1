"""Datasets for the pre-flight tests: small images of several shapes, with the usual mistakes made on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from wizard.config import TrainConfig

# (file stem, width, height, caption or None for no caption file)
TRAIN_IMAGES = [
    ("a_square", 64, 64, "mychar, smiling"),
    ("b_square", 64, 64, "mychar, standing"),
    ("c_square", 64, 64, "mychar, smiling, outdoors"),
    ("d_wide", 128, 64, "mychar, wide shot"),
    ("e_wide", 128, 64, "mychar, wide shot, outdoors"),
    ("f_tall", 64, 128, "portrait, smiling"),  # no trigger word
    ("g_uncaptioned", 64, 64, None),  # trained with the folder's class tokens "mychar"
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The demo's tiny SD1.5-layout model, random and not pretrained (the report and the step counts need no
    learning), saved as a single .safetensors file."""
    from sd_scripts.demo import tiny_sd15_model
    from sd_scripts.models import save_ldm_checkpoint

    path = tmp_path_factory.mktemp("tiny_model") / "tiny_sd15.safetensors"
    save_ldm_checkpoint(tiny_sd15_model(), path)
    return path


def write_image(path: Path, width: int, height: int, shade: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (shade, 200 - shade // 2, 90)).save(path)
    return path


def make_messy_dataset(root: Path, *, repeats: int = 5, regularization: bool = True) -> tuple[Path, Path | None]:
    """`root/images/<repeats>_mychar` (7 images, one without caption, one orphan caption, one corrupt image) and, when
    asked, `root/reg/1_person` (3 square images with captions). Returns (image folder, regularization folder)."""
    folder = root / "images" / f"{repeats}_mychar"
    for index, (stem, width, height, caption) in enumerate(TRAIN_IMAGES):
        write_image(folder / f"{stem}.png", width, height, shade=40 + 20 * index)
        if caption is not None:
            (folder / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")
    (folder / "orphan.txt").write_text("mychar, nobody here\n", encoding="utf-8")
    (folder / "z_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    reg_root = None
    if regularization:
        reg_root = root / "reg"
        for index in range(3):
            write_image(reg_root / "1_person" / f"person_{index}.png", 64, 64, shade=200 - 30 * index)
            (reg_root / "1_person" / f"person_{index}.txt").write_text("person\n", encoding="utf-8")
    return root / "images", reg_root


def small_config(model: Path, images: Path, output: Path, **settings: object) -> TrainConfig:
    """A CPU-sized config: 64 px with buckets from 64 to 128, batch 2, 2 epochs, AdamW in fp32."""
    config = TrainConfig(cuda=False)
    values = {
        "base_model": str(model),
        "img_folder": str(images),
        "output_folder": str(output),
        "change_output_name": "check",
        "train_resolution": 64,
        "buckets": True,
        "min_bucket_resolution": 64,
        "max_bucket_resolution": 128,
        "bucket_reso_steps": 64,
        "batch_size": 2,
        "num_epochs": 2,
        "net_dim": 4,
        "alpha": 4.0,
        "optimizer_type": "AdamW",
        "mixed_precision": "no",
        "cache_latents": True,
        "caption_extension": ".txt",
        "test_seed": 7,
    }
    values.update(settings)
    for name, value in values.items():
        config.set(name, value)
    return config
