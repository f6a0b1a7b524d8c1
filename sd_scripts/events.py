"""Events the trainer reports while it runs.

The trainer calls `on_event(event)` from its own (worker) thread; a UI must hand the event to its main thread
itself (the wizard puts them on a queue.Queue drained by Tk's `after`). Events are plain frozen dataclasses so
they can be logged, compared in tests and sent across threads safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union


@dataclass(frozen=True)
class Started:
    total_steps: int
    steps_per_epoch: int
    epochs: int
    num_train_images: int  # images x repeats
    num_reg_images: int
    device: str  # e.g. "cuda:0 (NVIDIA GeForce RTX 3060)" or "cpu"


@dataclass(frozen=True)
class Step:
    step: int  # optimizer steps done so far, 1-based
    total_steps: int
    epoch: int  # 1-based
    epochs: int
    loss: float  # loss of this step
    average_loss: float  # running mean over the current epoch
    lr: float  # learning rate of the first parameter group after this step
    steps_per_second: float
    elapsed_s: float
    eta_s: float


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    epochs: int
    average_loss: float


@dataclass(frozen=True)
class SampleMade:
    path: str
    prompt: str
    step: int


@dataclass(frozen=True)
class Saved:
    path: str
    epoch: int
    step: int
    final: bool
    state_dir: str | None = None  # set when a resumable training state was saved beside it


@dataclass(frozen=True)
class Finished:
    lora_path: str
    steps: int
    epochs: int
    elapsed_s: float
    stopped_early: bool  # True when the user pressed Stop
    loss_plot: str | None = None  # the run's loss plot (PNG) beside the LoRA, see sd_scripts.training.logs


@dataclass(frozen=True)
class Failed:
    message: str  # one sentence
    advice: str | None  # what to try, e.g. for out-of-memory or NaN loss


Event = Union[Started, Step, EpochEnd, SampleMade, Saved, Finished, Failed]
EventHandler = Callable[[Event], None]


def ignore_event(event: Event) -> None:
    """The default handler: the trainer runs silently."""
