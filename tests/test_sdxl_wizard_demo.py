"""`popup_main.py --demo sdxl`: the SDXL demo is built, trained with the settings the wizard gives an SDXL model, and
leaves an SDXL LoRA, its settings and a before/after picture. The first test is lean: the demo model's pre-training is
cut to 2 steps and the run to 1 (their length does not change the code path). The second runs the real demo, as a user
does, and measures what its LoRA does to the sample."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy
import pytest
from PIL import Image
from safetensors import safe_open

from sd_scripts import demo_pretraining
from sd_scripts.demo import build_demo
from wizard import runner
import questions
from wizard.app import main


@pytest.fixture
def short_sdxl_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(demo_pretraining, "VAE_STEPS", 2)
    monkeypatch.setattr(demo_pretraining, "UNET_STEPS", 2)
    monkeypatch.setattr(runner, "DEMO_BUILD_FOLDER", tmp_path / "build")
    short = {**runner.DEMO_SETTINGS, "max_steps": 1, "sample_every_n_epochs": 1}  # samples before and after
    monkeypatch.setattr(runner, "DEMO_SETTINGS", short)
    monkeypatch.delenv("DISPLAY", raising=False)  # the console, not the progress window
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return tmp_path / "runs"


def test_demo_sdxl_trains_an_sdxl_lora_with_the_sdxl_settings(short_sdxl_demo: Path):
    assert main(["--demo", "sdxl", str(short_sdxl_demo)], questions.FLOWS) == 0
    (run,) = short_sdxl_demo.iterdir()
    assert run.name.startswith("demo-sdxl-")
    (saved,) = run.glob("config-*-demo.json")
    settings = json.loads(saved.read_text(encoding="utf-8"))
    assert settings["sdxl"] and settings["unet_only"] and settings["cache_text_encoder_outputs"]
    with safe_open(str(run / "demo_lora.safetensors"), framework="pt") as lora:
        keys, metadata = list(lora.keys()), lora.metadata()
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert keys and all(key.startswith("lora_unet_") for key in keys)  # U-Net only, sd-scripts' SGM names
    assert any(key.startswith("lora_unet_input_blocks_") for key in keys)
    assert (run / "before_after.png").is_file()


# A change a user sees at a glance, without flipping between the two pictures: the smallest step people tell apart
# between two flat 8-bit colours is about 1-2% of the range (2-5 levels); 15 of 255 (6%), on average over every pixel
# and channel of the whole picture, is several such steps everywhere. The SD1.5 demo's test takes the same figure.
VISIBLE_CHANGE = 15.0


def mean_pixel_change(before: Path, after: Path) -> float:
    """The mean absolute difference of two samples, per pixel and channel, in 8-bit levels (0 to 255)."""
    first, second = (numpy.asarray(Image.open(path).convert("RGB"), dtype=float) for path in (before, after))
    return float(numpy.abs(second - first).mean())


@pytest.fixture(scope="module")
def built_sdxl_demo():
    """The real SDXL demo model, fully pre-trained, from the folder WIZARD_TEST_DEMO_ROOT names (built there once,
    about 70 s on 2 quiet cores, and reused). The whole demo then runs for about 2 minutes, which the suite's 15-minute
    budget on 2 cores cannot hold: without that folder the test is skipped, saying so."""
    kept = os.environ.get("WIZARD_TEST_DEMO_ROOT")
    if not kept:
        pytest.skip("the real SDXL demo takes about 2 minutes (plus 70 s to build once): set WIZARD_TEST_DEMO_ROOT "
                    "to a folder to run it")
    return build_demo(kept, family="sdxl")


def test_the_sdxl_demo_lora_visibly_changes_the_sample(built_sdxl_demo, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "DEMO_BUILD_FOLDER", built_sdxl_demo.model.parent)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["--demo", "sdxl", str(tmp_path)], questions.FLOWS) == 0
    (run,) = tmp_path.iterdir()
    samples = sorted((run / "sample").glob("*_00_*.png"))  # the first prompt's: before training (e000000) and after
    assert [path.name.split("_")[3] for path in samples] == ["e000000", "e000004"]
    change = mean_pixel_change(*samples)
    assert change > VISIBLE_CHANGE, f"the SDXL demo LoRA moved its sample by {change:.1f} of 255 per pixel"
