"""A queue of three settings files trained for real on the tiny demo model; the second one is broken.

The queue goes through the wizard's command line (`--queue DIR` with popups answered by a script) and its real
trainer, `wizard.runner.train_config`, so the runs share one process exactly as a user's queue does.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from accelerate.state import is_initialized
from diffusers import UNet2DConditionModel

import questions
from sd_scripts.saving import load_lora_file
from wizard.app import EXIT_FAILED, main
from wizard.askers.scripted import ScriptedAsker
from wizard.config import TrainConfig
from wizard.formats import seed_json

TINY = {
    "train_resolution": 64, "buckets": False, "batch_size": 2, "max_steps": 4, "net_dim": 4, "alpha": 4.0,
    "optimizer_type": "AdamW", "mixed_precision": "no", "xformers": False, "sample_prompts": None,
}


def save_settings(queue: Path, file_name: str, **values) -> None:
    config = TrainConfig(cuda=False)
    for name, value in {**TINY, **values}.items():
        config.set(name, value)
    seed_json.save(config, queue).rename(queue / file_name)


def live_unets() -> int:
    gc.collect()
    return sum(isinstance(thing, UNet2DConditionModel) for thing in gc.get_objects())


def test_a_queue_of_three_trains_the_good_ones_and_sets_the_broken_one_aside(tmp_path: Path, demo, one_thread):
    not_a_model = tmp_path / "notes.safetensors"
    not_a_model.write_bytes(b"these are my notes, not a Stable Diffusion model")
    output = tmp_path / "loras"
    output.mkdir()
    queue = tmp_path / "queue"
    queue.mkdir()
    common = {"img_folder": str(demo.images), "output_folder": str(output)}
    save_settings(queue, "1_first.json", base_model=str(demo.model), change_output_name="first", **common)
    save_settings(queue, "2_broken.json", base_model=str(not_a_model), change_output_name="second", **common)
    save_settings(queue, "3_third.json", base_model=str(demo.model), change_output_name="third", **common)
    unets_before = live_unets()

    asker = ScriptedAsker()
    assert main(["--queue", str(queue)], questions.FLOWS, asker=asker) == EXIT_FAILED

    for name in ("first", "third"):
        state_dict, metadata = load_lora_file(output / f"{name}.safetensors")
        assert any(key.startswith("lora_unet_") for key in state_dict) and metadata["ss_network_dim"] == "4"
        assert (output / f"{name}.txt").read_text(encoding="utf-8").startswith(
            f"Below is a list of keywords used during the training of {name}")
    assert not (output / "second.safetensors").exists()
    assert sorted(path.name for path in (queue / "complete").iterdir()) == ["1_first.json", "3_third.json"]
    assert sorted(path.name for path in (queue / "failed").iterdir()) == ["2_broken.error.txt", "2_broken.json"]
    reason = (queue / "failed" / "2_broken.error.txt").read_text(encoding="utf-8").strip()
    assert "notes.safetensors" in reason

    (kind, title, message) = asker.messages[-1]
    (summary_file,) = queue.glob("queue-summary-*.txt")
    saved = summary_file.read_text(encoding="utf-8")
    assert (kind, title) == ("info", "Queue finished") and str(summary_file) in message
    for text in (message, saved):
        assert "Queue finished: 2 of 3 trainings worked, 1 failed." in text
        assert f"  ok      1_first.json -> {output / 'first.safetensors'} (" in text
        assert f"  ok      3_third.json -> {output / 'third.safetensors'} (" in text
        assert f"  failed  2_broken.json: {reason} (" in text

    # between and after the runs nothing of a model stays alive and accelerate starts from scratch next time
    assert live_unets() == unets_before and not is_initialized()
