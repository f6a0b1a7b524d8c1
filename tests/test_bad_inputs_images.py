"""Bad-input corpus, images (issue 13 item 1): each strange picture gets one plain sentence naming the file, is
trained correctly or skipped cleanly, and reading the folder writes nothing.

Expected behaviour comes from the formats and from Pillow's documented behaviour: EXIF orientation 6 means "rotate
90 degrees clockwise to show" (as `PIL.ImageOps.exif_transpose` does), Pillow refuses images of more than
2 x `Image.MAX_IMAGE_PIXELS` pixels and warns above 1 x, a 16-bit sample v is the 8-bit sample round(v / 257).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from bad_input_builders import good_folder, settings_for, snapshot, write_exif_rotated_jpeg, write_image, write_png
from bad_input_builders import write_rgb16_png
from sd_scripts.dataset import scan_dataset
from sd_scripts.dataset.images import load_rgb
from sd_scripts.dataset.plan import DatasetProblems


def scan(root: Path):
    """Scan `root` (one `10_mychar` folder in it) and check that the scan wrote nothing."""
    before = snapshot(root)
    plan = scan_dataset(settings_for(root))
    assert snapshot(root) == before
    return plan


def one_warning(plan, *words: str) -> str:
    found = [warning for warning in plan.warnings if all(word in warning for word in words)]
    assert len(found) == 1, plan.warnings
    return found[0]


def trained_names(plan) -> list[str]:
    return sorted(image.path.name for image in plan.images)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return good_folder(tmp_path / "10_mychar")


def test_a_corrupt_image_is_skipped_and_named(folder):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    plan = scan(folder.parent)
    assert "(damaged or not really an image) and is skipped" in one_warning(plan, "broken.png")
    assert trained_names(plan) == ["good0.png", "good1.png"]


def test_a_zero_byte_image_is_skipped_and_named(folder):
    (folder / "empty.jpg").write_bytes(b"")
    plan = scan(folder.parent)
    assert "cannot be read" in one_warning(plan, "empty.jpg")
    assert "empty.jpg" not in trained_names(plan)


def test_a_one_pixel_image_is_trained_with_a_warning(folder):
    write_image(folder / "dot.png", (1, 1))
    plan = scan(folder.parent)
    assert "enlarged many times" in one_warning(plan, "dot.png (1x1)", "smaller than 64 pixels")
    assert "dot.png" in trained_names(plan)


def test_a_20000_pixel_header_is_refused_without_decoding(folder, monkeypatch):
    """A few hundred bytes that claim 20000 x 20000 (400 megapixels, 1.2 GB decoded): refused from the header."""
    write_png(folder / "bomb.png", 20000, 20000)

    def decoded(*args: object) -> None:
        pytest.fail("the scan decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    plan = scan(folder.parent)
    warning = one_warning(plan, "bomb.png")
    assert "more than 89 megapixels" in warning and "skipped" in warning and "shrink it" in warning
    assert "bomb.png" not in trained_names(plan)


def test_an_image_just_over_the_limit_is_named_with_its_size(folder):
    """10000 x 10000 is over Pillow's limit but under twice it, where Pillow only warns: refused all the same."""
    write_png(folder / "huge.png", 10000, 10000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape either
        plan = scan(folder.parent)
    assert "more than 89 megapixels" in one_warning(plan, "huge.png (10000x10000)")


def test_a_cmyk_jpeg_trains_in_its_colours(folder):
    Image.new("RGB", (64, 64), (200, 40, 40)).convert("CMYK").save(folder / "print.jpg", quality=95)
    plan = scan(folder.parent)
    assert "print.jpg" in trained_names(plan)
    pixels = np.asarray(load_rgb(folder / "print.jpg"), dtype=int)
    assert np.abs(pixels[32, 32] - (200, 40, 40)).max() <= 12  # JPEG loss only


def test_a_16_bit_grey_png_is_scaled_not_clipped_to_white(folder):
    """Pillow opens it as I;16 and its own RGB conversion clips every value above 255 to white."""
    Image.fromarray(np.full((64, 64), 32768, dtype=np.uint16)).save(folder / "grey16.png")
    assert Image.open(folder / "grey16.png").mode == "I;16"
    assert "grey16.png" in trained_names(scan(folder.parent))
    assert tuple(np.asarray(load_rgb(folder / "grey16.png"))[0, 0]) == (128, 128, 128)  # round(32768 / 257)


def test_a_16_bit_rgb_png_trains_its_colour(folder):
    write_rgb16_png(folder / "rgb16.png", 64, 64, value=0x8000)
    assert "rgb16.png" in trained_names(scan(folder.parent))
    assert tuple(np.asarray(load_rgb(folder / "rgb16.png"))[10, 10]) == (128, 128, 128)


def test_a_palette_image_with_transparency_is_named_and_loads_without_pillow_warnings(folder):
    image = Image.new("P", (64, 64), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.save(folder / "sticker.png", transparency=0)
    plan = scan(folder.parent)
    assert "transparency, which is dropped" in one_warning(plan, "sticker.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_rgb(folder / "sticker.png")
    assert loaded.mode == "RGB" and loaded.getpixel((5, 5)) == (255, 0, 0)


def test_an_animated_png_trains_its_first_frame_with_a_warning(folder):
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((250, 0, 0), (0, 250, 0))]
    frames[0].save(folder / "blink.png", save_all=True, append_images=frames[1:], duration=100)
    plan = scan(folder.parent)
    assert "only the first frame is trained" in one_warning(plan, "blink.png", "animated")
    assert load_rgb(folder / "blink.png").getpixel((10, 10)) == (250, 0, 0)


def test_an_exif_rotated_photo_is_trained_upright(folder):
    """Stored 96 wide, 64 high, orientation 6: shown (and trained) 64 wide, 96 high, stored top turned to the right."""
    write_exif_rotated_jpeg(folder / "phone.jpg", stored=(96, 64), orientation=6)
    plan = scan(folder.parent)
    assert "trained upright" in one_warning(plan, "phone.jpg", "EXIF orientation")
    record = next(image for image in plan.images if image.path.name == "phone.jpg")
    assert record.size == (64, 96)
    upright = load_rgb(folder / "phone.jpg")
    assert upright.size == (64, 96)
    right, left = np.asarray(upright, dtype=int)[48, 60], np.asarray(upright, dtype=int)[48, 3]
    assert right[0] > 200 and right[2] < 60  # the stored top (red) is on the right, as a viewer shows it
    assert left[2] > 200 and left[0] < 60


def test_a_png_named_jpg_is_read_by_its_content(folder):
    write_image(folder / "actually_png.jpg", (80, 64), format="PNG")
    plan = scan(folder.parent)
    record = next(image for image in plan.images if image.path.name == "actually_png.jpg")
    assert record.size == (80, 64)
    assert load_rgb(record.path).size == (80, 64)


def test_pictures_of_formats_that_are_not_trained_are_named(folder):
    write_image(folder / "anim.gif", (64, 64))
    write_image(folder / "scan.tif", (64, 64))
    write_image(folder / "UPPER.PNG", (64, 64))
    plan = scan(folder.parent)
    warning = one_warning(plan, "not trained (only PNG, JPG, WEBP and BMP are)")
    assert "anim.gif" in warning and "scan.tif" in warning and "convert them to PNG" in warning
    assert "UPPER.PNG" in trained_names(plan)  # any letter case of a trained format is read


def test_a_folder_of_only_broken_images_is_one_sentence(tmp_path):
    folder = tmp_path / "10_mychar"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not an image")
    write_png(folder / "b.png", 20000, 20000)
    with pytest.raises(DatasetProblems) as caught:
        scan_dataset(settings_for(tmp_path))
    assert caught.value.message == ("No training image can be used (a.png, b.png cannot be read or are too large); "
                                    "add readable PNG, JPG, WEBP or BMP images.")
