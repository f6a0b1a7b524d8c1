"""Issue 13's headline: a dataset with several problems (a caption saved in the Windows code page, a corrupt image, a
folder without the `N_` prefix) is reported whole, at once, in the pre-flight report and in the trainer's refusal
(`sd_scripts.train.train` and `python -m sd_scripts.train`), before any model loads. It used to stop on the first
problem, and on the next one at the next try.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bad_input_builders import fake_sd1_model, good_folder, no_model_loading, snapshot, wizard_config  # noqa: F401
from bad_input_builders import write_image
from sd_scripts.train import train
from wizard.preflight import preflight_report
from wizard.translate import to_train_args

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def messy(tmp_path: Path) -> tuple[Path, Path]:
    """(image folder, model): `10_mychar` with a cp1252 caption and a corrupt image, and `mychar extra` beside it."""
    images = tmp_path / "images"
    folder = good_folder(images / "10_mychar")
    write_image(folder / "cafe.png")
    (folder / "cafe.txt").write_bytes("mychar, café crème".encode("cp1252"))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n half a download")
    good_folder(images / "mychar extra")
    return images, fake_sd1_model(tmp_path / "model" / "base.safetensors")


def assert_names_every_problem(text: str, images: Path) -> None:
    assert text.startswith("A problem must be fixed before training can start:\n- The caption file "
                           f"{images / '10_mychar' / 'cafe.txt'} is not UTF-8 text; open it in a text editor and save "
                           "it with UTF-8 encoding.\nAlso worth a look (these alone would not stop training):\n- ")
    assert f"In {images / '10_mychar'}, broken.png cannot be read (damaged or not really an image)" in text
    assert f"These folders in {images} are ignored because their names do not start with a number of repeats" in text
    assert "mychar extra; rename one like 10_mychar extra to train it." in text
    assert "Traceback" not in text


def test_the_preflight_report_lists_every_problem_at_once(messy, tmp_path):
    images, model = messy
    before = snapshot(tmp_path)
    report = preflight_report(wizard_config(model, images, tmp_path / "out"), read_gpu=lambda: None,
                              check_torch=lambda: None)
    assert not report.can_start
    assert report.text().startswith("Training cannot start: A problem must be fixed")
    assert_names_every_problem(report.problem, images)
    assert snapshot(tmp_path) == before


def test_settings_model_and_images_problems_come_together(messy, tmp_path):
    images, _model = messy
    lora = tmp_path / "model" / "style.safetensors"
    from bad_input_builders import LORA_KEYS, write_safetensors

    write_safetensors(lora, LORA_KEYS)
    config = wizard_config(lora, images, tmp_path / "out", optimizer_args={"weight_decay": "lots"})
    problem = preflight_report(config, read_gpu=lambda: None, check_torch=lambda: None).problem
    assert problem is not None and problem.startswith("3 problems must be fixed before training can start:\n")
    lines = problem.splitlines()
    assert lines[1].startswith("- The optimizer option 'weight_decay=lots' has a value that is not a number")
    assert lines[2] == ("- This file is a LoRA, not a base model; choose a Stable Diffusion checkpoint as the base "
                        "model.")
    assert lines[3].startswith("- The caption file ") and "cafe.txt is not UTF-8 text" in lines[3]


def test_the_trainer_refuses_once_with_every_problem_before_loading(messy, tmp_path, no_model_loading):
    images, model = messy
    config = wizard_config(model, images, tmp_path / "out")
    result = train(to_train_args(config))
    assert not result.ok
    assert_names_every_problem(result.message, images)
    assert result.message == preflight_report(config, read_gpu=lambda: None, check_torch=lambda: None).problem
    assert not (tmp_path / "out").exists()


def test_the_command_line_refuses_once_with_every_problem(messy, tmp_path):
    """`python -m sd_scripts.train`: exit status 1, the whole list on stderr, no traceback, nothing written. The model
    file is a header only: had the trainer loaded it, the refusal would be the loader's, not the dataset's."""
    images, model = messy
    before = snapshot(tmp_path)
    command = [sys.executable, "-m", "sd_scripts.train", "--pretrained_model_name_or_path", str(model),
               "--train_data_dir", str(images), "--output_dir", str(tmp_path / "out"), "--resolution", "64",
               "--caption_extension", ".txt"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Training failed: A problem must be fixed before training can start:\n")
    assert_names_every_problem(done.stderr.removeprefix("Training failed: "), images)
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()
