"""The whole wizard as an artist uses it: `python popup_main.py` on a virtual screen, every popup answered with keys.

The starter popups save the settings as JSON and only save; the training popups get real paths (a small base model
file and an image folder with an N_name subfolder made here) and several answers that differ from the defaults; the
summary is reached, Save JSON and Start pressed; the saved JSON must hold those answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from xvfb import VirtualDisplay, shared_virtual_display, virtual_display  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
QUESTION_PREFIX = "LoRA Wizard - "
SUMMARY_TITLE = "Check your settings"


def typed(text: str) -> list[tuple[str, str]]:
    """Type into the pre-selected entry (typing replaces it), then Enter."""
    return [("type", text), ("key", "Return")]


def choice(position: int) -> list[tuple[str, str]]:
    """The choice at `position` (0 = first) of a choice popup."""
    return [("key", "Home")] + [("key", "Down")] * position + [("key", "Return")]


def make_inputs(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "models" / "tiny base.safetensors"
    model.parent.mkdir()
    save_file({"model.diffusion_model.out.2.bias": np.zeros(4, dtype=np.float32)}, str(model))
    images = tmp_path / "images"
    (images / "10_mychar").mkdir(parents=True)
    for index in range(2):
        (images / "10_mychar" / f"{index}.txt").write_text("mychar, red hair", encoding="utf-8")
    paths = {"model": model, "images": images, "output": tmp_path / "output", "json": tmp_path / "settings"}
    paths["output"].mkdir()
    paths["json"].mkdir()
    return paths


def visible_windows(display: VirtualDisplay) -> list[tuple[str, str]]:
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "."], env=display.env,
                           capture_output=True, text=True).stdout.split()
    named = []
    for window in found:
        name = subprocess.run(["xdotool", "getwindowname", window], env=display.env, capture_output=True, text=True)
        if name.returncode == 0:
            named.append((window, name.stdout.strip()))
    return named


def test_popup_main_from_first_popup_to_saved_json(virtual_display, tmp_path):
    paths = make_inputs(tmp_path)
    answers: dict[str, list[tuple[str, str]]] = {
        "queue": [("key", "n")],
        "load_json": [("key", "n")],
        "save_json": [("key", "y")],
        "save_json_folder": typed(str(paths["json"])),
        "save_json_name": typed("mychar settings"),
        "save_json_only": [("key", "y")],
        "base_model": typed(str(paths["model"])),
        "img_folder": typed(str(paths["images"])),
        "output_folder": typed(str(paths["output"])),
        "output_name": typed("mychar_v1"),
        "train_resolution": typed("64"),
        "net_dim": typed("16"),
        "alpha": typed("8"),
        "network_type": choice(1),  # LoCon
        "learning_rate": typed("2e-4"),
        "scheduler": choice(1),  # cosine
        "num_epochs": typed("3"),
    }
    summary_keys = iter([["shift+Tab", "shift+Tab", "Return"], ["Return"]])  # Save JSON, then Start training
    asked: list[str] = []
    app = subprocess.Popen([sys.executable, "popup_main.py"], cwd=ROOT, env=virtual_display.env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while app.poll() is None:
            assert time.monotonic() < deadline, f"the wizard did not finish; it asked {asked}"
            windows = visible_windows(virtual_display)
            if not windows:
                time.sleep(0.05)
                continue
            window, title = windows[0]
            asked.append(title.removeprefix(QUESTION_PREFIX))
            if title.startswith(QUESTION_PREFIX):
                question = title.removeprefix(QUESTION_PREFIX)
                assert asked.count(question) <= 2, f"{question} was asked again and again: {asked}"
                for action, value in answers.get(question, [("key", "Return")]):  # Enter keeps the default
                    if action == "type":
                        virtual_display.type(window, value)
                    else:
                        virtual_display.key(window, value)
            elif title == SUMMARY_TITLE:
                virtual_display.key(window, *next(summary_keys))
            elif title == "Settings saved":
                virtual_display.key(window, "Return")
            else:
                raise AssertionError(f"unexpected popup {title!r} after {asked}")
            virtual_display.wait_gone(window)
        stdout, stderr = app.communicate(timeout=30)
    finally:
        if app.poll() is None:
            app.kill()
    assert app.returncode == 0, f"exit {app.returncode}: {stderr}"
    assert asked.count(SUMMARY_TITLE) == 2 and "Settings saved" in asked
    assert asked.index("network_type") < asked.index(SUMMARY_TITLE)

    saved_files = list(paths["json"].glob("*mychar settings.json"))  # the seed tool's naming: config-<time>-<name>
    assert len(saved_files) == 1, f"expected one saved settings file, found {saved_files}"
    saved = json.loads(saved_files[0].read_text(encoding="utf-8"))
    assert saved["base_model"] == str(paths["model"])
    assert saved["img_folder"] == str(paths["images"])
    assert saved["output_folder"] == str(paths["output"])
    assert saved["change_output_name"] == "mychar_v1"
    assert saved["train_resolution"] == 64
    assert saved["net_dim"] == 16
    assert saved["alpha"] == 8.0
    assert saved["learning_rate"] == 0.0002
    assert saved["scheduler"] == "cosine"
    assert saved["num_epochs"] == 3
    assert saved["network_type"] == "LoCon"


ARTIFACTS = ROOT / "test-artifacts" / "screenshots"


def test_popup_main_trains_the_demo_from_the_first_popup_to_a_lora_diffusers_loads(virtual_display, demo, tmp_path):
    """Popups -> summary -> pre-flight report -> progress window -> final popup -> a LoRA diffusers loads.

    A short settings file (loaded with the starter question, new folders chosen) keeps the run small; every other
    question is answered with Enter, as a hurried user would. Screenshots of the summary, the report and the progress
    window are kept as test artifacts.
    """
    settings = tmp_path / "short run.json"
    settings.write_text(json.dumps({
        "train_resolution": 64, "buckets": False, "batch_size": 2, "num_epochs": 1, "net_dim": 4, "alpha": 4.0,
        "optimizer_type": "AdamW", "mixed_precision": "no", "learning_rate": 1e-3, "test_seed": 5,
    }), encoding="utf-8")
    output = tmp_path / "output"
    output.mkdir()
    answers: dict[str, list[tuple[str, str]]] = {
        "load_json": [("key", "y")],
        "load_json_file": typed(str(settings)),
        "new_folders": [("key", "y")],
        "base_model": typed(str(demo.model)),
        "img_folder": typed(str(demo.images)),
        "output_folder": typed(str(output)),
        "output_name": typed("e2e"),
    }
    shots = {SUMMARY_TITLE: "e2e_summary.png", "Before training starts": "e2e_preflight.png",
             "Training finished": "e2e_progress_window_finished.png"}
    asked: list[str] = []
    app = subprocess.Popen([sys.executable, "popup_main.py"], cwd=ROOT, env=virtual_display.env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 400
        while app.poll() is None:
            assert time.monotonic() < deadline, f"the wizard did not finish; it showed {asked}"
            windows = [(window, title) for window, title in visible_windows(virtual_display)
                       if not title.endswith("Training e2e")]  # the progress window stays open beside popups
            if not windows:
                progress = [window for window, title in visible_windows(virtual_display)
                            if title.endswith("Training e2e")]  # its title starts with how far it is
                if progress and "Training finished" in asked:  # the final popup was read: press Close
                    x, y, width, height = virtual_display.window_geometry(progress[0])
                    virtual_display.click(x + width - 60, y + height - 28)
                    virtual_display.wait_gone(progress[0], timeout=20)
                time.sleep(0.1)
                continue
            window, title = windows[0]
            asked.append(title.removeprefix(QUESTION_PREFIX))
            if title in shots:
                time.sleep(0.3)  # let the window draw itself
                virtual_display.screenshot(ARTIFACTS / shots[title])
            if title.startswith(QUESTION_PREFIX):
                question = title.removeprefix(QUESTION_PREFIX)
                assert asked.count(question) <= 2, f"{question} was asked again and again: {asked}"
                for action, value in answers.get(question, [("key", "Return")]):
                    if action == "type":
                        virtual_display.type(window, value)
                    else:
                        virtual_display.key(window, value)
            elif title in (SUMMARY_TITLE, "Before training starts", "Training finished", "Settings loaded"):
                virtual_display.key(window, "Return")  # Start training / Start / OK
            else:
                raise AssertionError(f"unexpected popup {title!r} after {asked}")
            virtual_display.wait_gone(window, timeout=60)
        stdout, stderr = app.communicate(timeout=30)
    finally:
        if app.poll() is None:
            app.kill()
    assert app.returncode == 0, f"exit {app.returncode}: {stderr[-2000:]}"
    assert asked.index(SUMMARY_TITLE) < asked.index("Before training starts") < asked.index("Training finished")
    assert "net_dim" not in asked and "base_model" in asked  # loaded settings are skipped, new folders asked
    lora = output / "e2e.safetensors"
    assert lora.is_file() and (output / "preflight.txt").is_file()

    from diffusers import StableDiffusionPipeline

    from sd_scripts.models import load_base_model

    model = load_base_model(str(demo.model))
    pipeline = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                       unet=model.unet, scheduler=None, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = pipeline.unet(latents, 500, context).sample
        pipeline.load_lora_weights(str(lora))
        after = pipeline.unet(latents, 500, context).sample
    assert (after - before).abs().max().item() > 1e-4  # the trained LoRA changes what the model predicts
