"""`popup_main.py --demo sdxl`: the SDXL demo is built, trained with the settings the wizard gives an SDXL model, and
leaves an SDXL LoRA, its settings and a before/after picture. The test is lean: the demo model's pre-training is cut to
2 steps and the run to 1 (their length does not change the code path). What the real demo's LoRA does to the sample,
and how long it takes, is measured by `python -m benchmarks.demo_effect --family sdxl` (figures in the README)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from sd_scripts import demo_pretraining
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
