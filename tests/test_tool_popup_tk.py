"""A side tool's real Tk popups under Xvfb, driven as a person would: `popup_main.py`, "Resize images" chosen in the
first popup, each question answered with the keyboard, the summary started, the result acknowledged. A screenshot of
the tool's summary is kept in test-artifacts/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from xvfb import ARTIFACTS, VirtualDisplay, shared_virtual_display, virtual_display  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]


def test_the_image_resize_popups_run_end_to_end_from_the_first_popup(virtual_display: VirtualDisplay, tmp_path):
    source, destination = tmp_path / "images", tmp_path / "out"
    source.mkdir()
    destination.mkdir()
    Image.new("RGB", (300, 200), (10, 120, 200)).save(source / "one.png")
    (source / "one.txt").write_text("a blue card", encoding="utf-8")
    app = subprocess.Popen([sys.executable, "popup_main.py"], cwd=ROOT, env=virtual_display.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = virtual_display.find_window("^LoRA Wizard - what_to_do$", timeout=60)
        virtual_display.key(first, "End", "Return")  # the last entry: Resize images
        for question, answer in (("src_folder", source), ("dst_folder", destination)):
            window = virtual_display.find_window(f"^LoRA Wizard - {question}$")
            virtual_display.key(window, "ctrl+a", "BackSpace")
            virtual_display.type(window, str(answer))
            virtual_display.key(window, "Return")
        for question in ("sizes", "interpolation"):
            virtual_display.key(virtual_display.find_window(f"^LoRA Wizard - {question}$"), "Return")
        summary = virtual_display.find_window("^Check the settings: Resize images$")
        virtual_display.screenshot(ARTIFACTS / "tool_images_summary.png")
        virtual_display.key(summary, "Return")
        done = virtual_display.find_window("^Resize images: done$", timeout=60)
        virtual_display.key(done, "Return")
        output, _ = app.communicate(timeout=60)
    finally:
        app.kill()
    assert app.returncode == 0, output
    assert (destination / "128x128" / "one.txt").read_text(encoding="utf-8") == "a blue card"
    with Image.open(destination / "512x512" / "one.png") as image:
        assert image.size == (256, 192)  # 300x200 fits 512x512: only cropped to multiples of 64
