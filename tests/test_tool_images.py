"""Image resize: at most the size's pixels with the aspect ratio kept, sides divisible, one folder per size,
captions copied, the originals untouched, a corrupt image reported and skipped, nothing overwritten."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
from PIL import Image

from sd_scripts.errors import UserFacingError
from sd_scripts.tools.image_resize import main, resize_images


def make_images(folder: Path) -> dict[str, str]:
    folder.mkdir()
    Image.new("RGB", (900, 600), (200, 30, 30)).save(folder / "wide.png")
    Image.new("RGB", (300, 700), (30, 30, 200)).save(folder / "tall.jpg")
    (folder / "wide.txt").write_text("a red rectangle", encoding="utf-8")
    (folder / "tall.caption").write_text("a blue bar", encoding="utf-8")
    (folder / "broken.png").write_bytes(b"not a picture")
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def test_copies_fit_each_size_keep_their_aspect_and_captions_and_leave_the_originals(tmp_path):
    source = tmp_path / "images"
    before = make_images(source)
    result = resize_images(source, tmp_path / "out", "512x512,256x256", divisible_by=64, interpolation="lanczos4",
                           save_as_png=True, copy_associated_files=True)
    for side in (512, 256):
        folder = tmp_path / "out" / f"{side}x{side}"
        for name, (width, height) in {"wide": (900, 600), "tall": (300, 700)}.items():
            with Image.open(folder / f"{name}.png") as image:
                w, h = image.size
            scale = min(1.0, math.sqrt(side * side / (width * height)))
            assert (w, h) == (int(width * scale) // 64 * 64, int(height * scale) // 64 * 64)
            assert w * h <= side * side and w % 64 == 0 and h % 64 == 0
        assert (folder / "wide.txt").read_text(encoding="utf-8") == "a red rectangle"
        assert (folder / "tall.caption").read_text(encoding="utf-8") == "a blue bar"
        assert not (folder / "broken.png").exists()
    assert [(path.name, why.startswith("it could not be read")) for path, why in result.skipped] == \
        [("broken.png", True)]
    assert {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in source.iterdir()} == before
    with pytest.raises(UserFacingError, match="already exists"):
        resize_images(source, tmp_path / "out", "256x256", save_as_png=True)


def test_the_command_line_takes_sd_scripts_options(tmp_path, capsys):
    source = tmp_path / "images"
    make_images(source)
    assert main([str(source), str(tmp_path / "out"), "--max_resolution", "128x128", "--divisible_by", "64",
                 "--interpolation", "area"]) == 0
    assert sorted(path.name for path in (tmp_path / "out" / "128x128").iterdir()) == ["tall.jpg", "wide.jpg"]
    assert "Skipped broken.png" in capsys.readouterr().out
    assert main([str(source), str(tmp_path / "o2"), "--max_resolution", "big"]) == 2
    assert "is not a size like 512x512" in capsys.readouterr().err
