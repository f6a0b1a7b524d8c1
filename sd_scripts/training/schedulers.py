"""Learning-rate schedules as sd-scripts makes them: diffusers' named schedules with warmup given in steps (the
trainer resolves a ratio first), Adafactor's own schedule, and a constant one for schedule-free optimizers."""

from __future__ import annotations

import torch
from diffusers.optimization import get_scheduler
from torch.optim.lr_scheduler import LambdaLR

from sd_scripts.training.optimizers import BuiltOptimizer


def build_schedule(
    built: BuiltOptimizer,
    name: str,
    *,
    learning_rate: float,
    warmup_steps: int,
    total_steps: int,
    num_cycles: int = 1,
    power: float = 1.0,
) -> tuple[LambdaLR, list[str]]:
    """The schedule for `built`: `name`, unless the optimizer sets its own rate (sd-scripts' rule); and notes."""
    if built.follows_schedule:
        return build_lr_scheduler(built.optimizer, name, warmup_steps=warmup_steps, total_steps=total_steps,
                                  num_cycles=num_cycles, power=power)
    if built.kind.name == "AdaFactor":
        return build_adafactor_schedule(built.optimizer, learning_rate), []
    notes = []
    if name != "constant" or warmup_steps:
        notes.append(f"{built.kind.name} keeps the learning rate constant (it averages its weights instead of "
                     f"following a schedule), so the {name} schedule and its warmup are not used; to warm up, set "
                     "warmup_steps in optimizer_args.")
    return get_scheduler("constant", built.optimizer), notes


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
