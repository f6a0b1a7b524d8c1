"""What every fault test checks afterwards: each output under its final name is whole and loads, nothing half-written
is left under a final name, and a state resumes the run at the step after it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from sd_scripts.events import Step
from sd_scripts.train import train
from sd_scripts.training.state import NETWORK_FILE, OPTIMIZER_FILE, RANDOM_FILE, SCHEDULER_FILE, read_position
from test_train_fixtures import EventLog


def check_outputs_whole(folder: Path) -> dict[str, Path]:
    """Load every LoRA, state and sample under a final name (a half-written one raises); returns them by name.

    Hidden entries (a leading dot) are temporary names and are left out: nothing shows them to a user as output."""
    outputs = {}
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.parent.name.endswith("-state"):
            continue  # read with its state folder
        if path.suffix == ".safetensors":
            assert load_file(str(path)), f"{path} holds no tensors"
        elif path.is_dir() and path.name.endswith("-state"):
            read_position(path)
            assert load_file(str(path / NETWORK_FILE))
            for name in (OPTIMIZER_FILE, SCHEDULER_FILE, RANDOM_FILE):
                torch.load(path / name, weights_only=True)
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.load()  # decodes every row: a cut-off PNG fails here
        else:
            continue
        outputs[path.name] = path
    return outputs


def temporary_leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob(".*"))


def resume_and_finish(args, state_dir: Path) -> tuple:
    """Resume from `state_dir`: the run must go on at the step after the state's and finish."""
    events = EventLog()
    result = train(dataclasses.replace(args, resume=str(state_dir)), events)
    assert result.ok, result.message
    steps = [event.step for event in events.of(Step)]
    assert steps == list(range(read_position(state_dir).global_step + 1, result.steps + 1)), steps
    return result, events
