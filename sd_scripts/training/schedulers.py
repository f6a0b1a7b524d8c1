"""Learning-rate schedules: diffusers' six named schedules, with warmup given as steps or as a ratio."""

from __future__ import annotations

import torch
from diffusers.optimization import get_scheduler
from torch.optim.lr_scheduler import LambdaLR



def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    *,
    warmup_steps: int,
    total_steps: int,
    num_cycles: int = 1,
    power: float = 1.0,
) -> tuple[LambdaLR, list[str]]:
    """The schedule `name` over `total_steps` optimizer steps; returns it and notes for the user."""
    notes = []
    if name == "constant" and warmup_steps > 0:
        notes.append(f"The constant schedule has no warmup, so the {warmup_steps} warmup steps are not used; "
                     "choose constant_with_warmup to warm up.")
    scheduler = get_scheduler(
        name,
        optimizer,
        num_warmup_steps=warmup_steps,
        num_training_steps=total_steps,
        num_cycles=num_cycles,
        power=power,
    )
    return scheduler, notes


def build_adafactor_schedule(optimizer: torch.optim.Optimizer, initial_lr: float) -> LambdaLR:
    """Adafactor with relative_step sets its own rate; this schedule only reports it (sd-scripts' "adafactor")."""
    from transformers.optimization import AdafactorSchedule

    return AdafactorSchedule(optimizer, initial_lr=initial_lr)
