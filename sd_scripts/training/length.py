"""How long a run is: optimizer steps per epoch, total steps and epochs, counted as sd-scripts counts them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sd_scripts.errors import UserFacingError


@dataclass(frozen=True)
class RunLength:
    batches_per_epoch: int  # data batches (micro-batches) per epoch, on all processes together
    steps_per_epoch: int  # optimizer steps per epoch (batches grouped by gradient accumulation)
    total_steps: int
    epochs: int


def plan_run_length(
    batches_per_epoch: int,
    gradient_accumulation_steps: int,
    max_train_steps: int,
    max_train_epochs: int | None,
    num_processes: int = 1,
) -> RunLength:
    """max_train_epochs, when given, wins over max_train_steps; epochs = ceil(total steps / steps per epoch).

    With several processes each takes its share of the epoch's batches, and a step is one batch (or accumulation
    group) on every process: sd-scripts' ceil(batches / num_processes / gradient_accumulation_steps).
    """
    steps_per_epoch = math.ceil(batches_per_epoch / num_processes / gradient_accumulation_steps)
    total_steps = max_train_epochs * steps_per_epoch if max_train_epochs else max_train_steps
    return RunLength(batches_per_epoch, steps_per_epoch, total_steps, math.ceil(total_steps / steps_per_epoch))


def resolve_warmup_steps(lr_warmup_steps: float, total_steps: int) -> int:
    """A value below 1 is a ratio of the total steps (sd-scripts HEAD, and the wizard's warmup ratio); else a count."""
    if lr_warmup_steps < 0:
        raise UserFacingError(f"lr_warmup_steps is {lr_warmup_steps}; use 0 or more warmup steps, or a ratio below 1.")
    if lr_warmup_steps < 1:
        return int(total_steps * lr_warmup_steps)
    if not float(lr_warmup_steps).is_integer():
        raise UserFacingError(
            f"lr_warmup_steps is {lr_warmup_steps}; give a whole number of steps, or a ratio below 1 such as 0.05."
        )
    return int(lr_warmup_steps)
