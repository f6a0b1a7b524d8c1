"""Each side tool's real Tk popups under Xvfb, driven as a person would: `popup_main.py`, the tool chosen in the first
popup, each question answered with the keyboard, the summary started with its button named after the tool's action,
the result acknowledged; then the files the tool wrote are checked. One Xvfb serves them all. A screenshot of each
tool's summary is kept in test-artifacts/."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import questions
from questions.start import CHOICES
from sd_scripts.saving import load_lora_file, save_lora
from tool_fixtures import tiny_checkpoint
from xvfb import ARTIFACTS, VirtualDisplay, shared_virtual_display, virtual_display  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
MODULE = "lora_te_text_model_encoder_layers_0_mlp_fc1"  # a 32 -> 64 Linear of the tiny text encoder
DEFAULT = None  # an answer: press Enter on what the popup offers


def one_module(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    """A LoRA or LyCORIS file of one module of the tiny text encoder, random factors of the given shapes."""
    generator = torch.Generator().manual_seed(len(tensors))
    return save_lora({f"{MODULE}.{key}": torch.randn(shape, generator=generator) * 0.1
                      for key, shape in tensors.items()} | {f"{MODULE}.alpha": torch.tensor(2.0)}, path)


def lora(path: Path) -> Path:
    return one_module(path, {"lora_down.weight": (4, 32), "lora_up.weight": (64, 4)})


def drive(display: VirtualDisplay, tool: str, answers: list[tuple[str, object]]) -> str:
    """Start popup_main.py, choose `tool` in the first popup, answer each (question id, answer) in turn (typed over
    the offered value, or DEFAULT), press the summary's start button and the result's OK; the app's output."""
    flow = questions.TOOLS[tool]
    app = subprocess.Popen([sys.executable, "popup_main.py"], cwd=ROOT, env=display.env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        first = display.find_window("^LoRA Wizard - what_to_do$", timeout=60)
        position = [choice.id for choice in CHOICES].index(tool)
        display.key(first, "Home", *["Down"] * position, "Return")
        for question, answer in answers:
            window = display.find_window(f"^LoRA Wizard - {question}$", timeout=30)
            if answer is not DEFAULT:
                display.key(window, "End", "shift+Home", "BackSpace")
                display.type(window, str(answer))
            display.key(window, "Return")
        summary = display.find_window(f"^Check the settings: {flow.title}$", timeout=30)
        display.screenshot(ARTIFACTS / f"tool_{tool}_summary.png")
        display.key(summary, "Return")  # the start button has the focus
        display.key(display.find_window(f"^{flow.title}: done$", timeout=180), "Return")
        output, _ = app.communicate(timeout=120)
    finally:
        app.kill()
    assert app.returncode == 0, output
    return output


def images_case(tmp_path: Path) -> tuple[list, Callable[[], None]]:
    source, destination = tmp_path / "images", tmp_path / "out"
    source.mkdir()
    destination.mkdir()
    Image.new("RGB", (300, 200), (10, 120, 200)).save(source / "one.png")
    (source / "one.txt").write_text("a blue card", encoding="utf-8")

    def check() -> None:
        assert (destination / "128x128" / "one.txt").read_text(encoding="utf-8") == "a blue card"
        with Image.open(destination / "512x512" / "one.png") as image:
            assert image.size == (256, 192)  # 300x200 fits 512x512: only cropped to multiples of 64

    return [("src_folder", source), ("dst_folder", destination), ("sizes", DEFAULT),
            ("interpolation", DEFAULT)], check


def resize_case(tmp_path: Path) -> tuple[list, Callable[[], None]]:
    source = lora(tmp_path / "mine.safetensors")

    def check() -> None:
        tensors, metadata = load_lora_file(tmp_path / "mine-Fixed-2.safetensors")
        assert tensors[f"{MODULE}.lora_down.weight"].shape == (2, 32) and metadata["ss_network_dim"] == "2"

    return [("lora", source), ("method", DEFAULT), ("new_rank", 2), ("targets_file", DEFAULT),
            ("output_folder", tmp_path), ("output_name", DEFAULT), ("save_precision", DEFAULT),
            ("device", DEFAULT)], check


def merge_case(tmp_path: Path) -> tuple[list, Callable[[], None]]:
    first, second = lora(tmp_path / "a.safetensors"), lora(tmp_path / "b.safetensors")

    def check() -> None:
        tensors, _ = load_lora_file(tmp_path / "merged.safetensors")
        assert tensors[f"{MODULE}.lora_down.weight"].shape == (8, 32)  # the default new rank, 8

    return [("merge_into", DEFAULT), ("lora_1", first), ("ratio_1", DEFAULT), ("lora_2", second),
            ("ratio_2", 0.5), ("lora_3", DEFAULT), ("method", DEFAULT), ("new_rank", DEFAULT),
            ("output_folder", tmp_path), ("output_name", DEFAULT), ("save_precision", DEFAULT)], check


def extract_case(tmp_path: Path) -> tuple[list, Callable[[], None]]:
    base = tiny_checkpoint(tmp_path / "base.safetensors", seed=0)
    tuned = tiny_checkpoint(tmp_path / "tuned.safetensors", seed=1)

    def check() -> None:
        tensors, _ = load_lora_file(tmp_path / "tuned-fixed-4.safetensors")
        assert tensors[f"{MODULE}.lora_down.weight"].shape == (4, 32)

    return [("model_tuned", tuned), ("model_org", base), ("mode", DEFAULT), ("linear", 4), ("conv", DEFAULT),
            ("targets_file", DEFAULT), ("output_folder", tmp_path), ("output_name", DEFAULT),
            ("save_precision", DEFAULT), ("device", DEFAULT)], check


def merge_lycoris_case(tmp_path: Path) -> tuple[list, Callable[[], None]]:
    base = tiny_checkpoint(tmp_path / "base.safetensors")
    loha = one_module(tmp_path / "loha.safetensors", {"hada_w1_a": (64, 2), "hada_w1_b": (2, 32),
                                                      "hada_w2_a": (64, 2), "hada_w2_b": (2, 32)})

    def check() -> None:
        key = "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
        before, after = load_file(base)[key], load_file(tmp_path / "baked.safetensors")[key].float()
        assert (after - before).abs().max() > 1e-3  # the LoHa's layer changed (fp16 rounding is ~1e-4 here)

    return [("base_model", base), ("lycoris", loha), ("weight", DEFAULT), ("output_folder", tmp_path),
            ("output_name", "baked"), ("save_precision", DEFAULT)], check


CASES = {"images": images_case, "resize": resize_case, "merge": merge_case, "extract": extract_case,
         "merge_lycoris": merge_lycoris_case}


@pytest.mark.parametrize("tool", list(CASES))
def test_each_tools_popups_run_end_to_end_from_the_first_popup(virtual_display: VirtualDisplay, tmp_path, tool):
    answers, check = CASES[tool](tmp_path)
    drive(virtual_display, tool, answers)
    check()
