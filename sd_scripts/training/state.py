"""A resumable training state: everything needed to continue a run exactly where it stopped.

A state is a folder beside the LoRA (`<name>-000002-state`, `<name>-step00000120-state`) holding the network
weights, the optimizer and learning-rate schedule states, every random number generator and the position in the
run, and the id of the training session it belongs to (a resumed run keeps it, so the saves it writes again are
known as its own). It is written to a hidden temporary folder first (`.<name>-state.<random>.tmp`), every file
flushed to the disk, and renamed into place, so a crash or a full disk never leaves half a state under its final
name. It is read back with `torch.load(weights_only=True)` only, so a state folder from elsewhere cannot run code.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save as safetensors_bytes

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.base import Network
from sd_scripts.saving.atomic import TEMPORARY_SUFFIX, flush_to_disk, temporary_prefix, unwritable_error
from sd_scripts.saving.lora_file import torch_bytes

STATE_FORMAT = 1
POSITION_FILE = "train_state.json"
NETWORK_FILE = "network.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "lr_scheduler.pt"
RANDOM_FILE = "random_states.pt"


@dataclass
class RunPosition:
    """Where a run stands: `epoch` is the 1-based epoch to continue in, `batches_done` how many of its batches are used."""

    global_step: int
    epoch: int
    batches_done: int
    total_steps: int


def save_training_state(
    state_dir: Path,
    *,
    network_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    noise_generator: torch.Generator,
    position: RunPosition,
    session_id: int | None = None,
    replace: bool = False,
) -> Path:
    """Write the state folder atomically; an existing folder is replaced only when `replace` is True (a resumed
    run writing its own interrupted run's state again), else refused."""
    state_dir = Path(state_dir)
    if state_dir.exists() and not replace:
        raise UserFacingError(f"The state folder {state_dir} already exists; move it away or choose another output name.")
    temporary = Path(tempfile.mkdtemp(prefix=temporary_prefix(state_dir), suffix=TEMPORARY_SUFFIX,
                                      dir=state_dir.parent))
    try:
        (temporary / NETWORK_FILE).write_bytes(safetensors_bytes(
            {name: tensor.detach().contiguous().cpu() for name, tensor in network_state.items()}))
        (temporary / OPTIMIZER_FILE).write_bytes(torch_bytes(optimizer.state_dict()))
        (temporary / SCHEDULER_FILE).write_bytes(torch_bytes(lr_scheduler.state_dict()))
        (temporary / RANDOM_FILE).write_bytes(torch_bytes(_random_states(noise_generator)))
        (temporary / POSITION_FILE).write_text(
            json.dumps({"format": STATE_FORMAT, **asdict(position), "session_id": session_id}, indent=2))
        for child in temporary.iterdir():
            flush_to_disk(child)
            child.chmod(0o644)
        temporary.chmod(0o755)
        if state_dir.exists():  # replace: the old folder moves into a temporary one, the new takes its name
            old = Path(tempfile.mkdtemp(prefix=temporary_prefix(state_dir), suffix=TEMPORARY_SUFFIX,
                                        dir=state_dir.parent))
            os.rename(state_dir, old / state_dir.name)
            os.replace(temporary, state_dir)
            shutil.rmtree(old)
        else:
            os.replace(temporary, state_dir)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise unwritable_error(state_dir, error) from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return state_dir


def read_position(state_dir: Path) -> RunPosition:
    """Read only the position, to plan the rest of the run before the heavy parts are loaded."""
    state_dir = Path(state_dir)
    position_file = state_dir / POSITION_FILE
    if not position_file.is_file():
        raise UserFacingError(
            f"{state_dir} is not a training state folder (it has no {POSITION_FILE}); choose a folder ending in -state."
        )
    data = json.loads(position_file.read_text())
    if data.get("format") != STATE_FORMAT:
        raise UserFacingError(f"The training state in {state_dir} was written by another version; start a new training.")
    return RunPosition(data["global_step"], data["epoch"], data["batches_done"], data["total_steps"])


def read_session_id(state_dir: Path) -> int | None:
    """The training session a state belongs to (None for a state written before the id was kept)."""
    return json.loads((Path(state_dir) / POSITION_FILE).read_text()).get("session_id")


def written_by_session(path: Path, session_id: int) -> bool:
    """Whether an existing output is the training session's own: a state folder whose position says so, or a
    .safetensors LoRA whose metadata does (`ss_session_id`); a .ckpt/.pt file cannot tell, so it never is."""
    try:
        if path.is_dir():
            return read_session_id(path) == session_id
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                return (handle.metadata() or {}).get("ss_session_id") == str(session_id)
    except (OSError, ValueError, SafetensorError):
        pass
    return False


def load_training_state(
    state_dir: Path,
    *,
    network: Network,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict:
    """Restore the weights, optimizer and schedule of a state into freshly built objects.

    Returns the saved random number generator states: the loop applies them with `restore_random_states` at the
    point of the run where they were taken (after the epoch's batch order is drawn).
    """
    state_dir = Path(state_dir)
    read_position(state_dir)
    network.load_weights(load_file(state_dir / NETWORK_FILE))
    try:
        optimizer.load_state_dict(torch.load(state_dir / OPTIMIZER_FILE, weights_only=True))
    except (ValueError, KeyError):
        raise UserFacingError(
            f"The optimizer state in {state_dir} does not fit these settings (another optimizer or network size?); "
            "resume with the settings of the interrupted run."
        ) from None
    lr_scheduler.load_state_dict(torch.load(state_dir / SCHEDULER_FILE, weights_only=True))
    return torch.load(state_dir / RANDOM_FILE, weights_only=True)


def _random_states(noise_generator: torch.Generator) -> dict:
    python_state = random.getstate()
    numpy_state = numpy.random.get_state()
    return {
        "python": [python_state[0], list(python_state[1]), python_state[2]],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(numpy.int64)), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "noise": noise_generator.get_state(),
    }


def restore_random_states(states: dict, noise_generator: torch.Generator) -> None:
    """Put Python's, numpy's, torch's (and CUDA's) generators and the noise generator back where they were."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    numpy.random.set_state((name, keys.numpy().astype(numpy.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    noise_generator.set_state(states["noise"])
