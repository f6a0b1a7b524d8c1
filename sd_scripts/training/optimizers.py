"""Build the optimizer sd-scripts would build for `--optimizer_type` and `--optimizer_args`, from its real package.

Which optimizers exist and what each takes is declared in `sd_scripts.optimizer_kinds`; the checks before the
model loads (`sd_scripts.training.validation`) resolve the same class and options without building it, so a
missing package or a wrong option never waits for the base model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sd_scripts.errors import UserFacingError
from sd_scripts.optimizer_kinds import (
    OptimizerKind,
    check_optimizer_options,
    complete_options,
    follows_lr_schedule,
    optimizer_class,
)

LOW_LEARNING_RATE = 0.1  # sd-scripts warns below this for D-Adaptation and Prodigy


@dataclass
class BuiltOptimizer:
    optimizer: torch.optim.Optimizer
    kind: OptimizerKind
    description: str  # "module.Class(k=v,...)" as sd-scripts writes it into ss_optimizer
    follows_schedule: bool  # False: schedule-free, or Adafactor finding its own rate: the schedule stays constant
    notes: list[str]


def build_optimizer(
    kind: OptimizerKind, param_groups: list[dict], learning_rate: float, options: dict[str, Any]
) -> BuiltOptimizer:
    """Create the optimizer of `kind` over `param_groups` with the user's `options` (parsed optimizer_args)."""
    options = complete_options(kind, options)
    cls = optimizer_class(kind)
    check_optimizer_options(kind, cls, options)
    notes: list[str] = []
    extra: dict[str, Any] = {}  # passed to the class but, as in sd-scripts, not listed in ss_optimizer
    lr: float | None = learning_rate
    if kind.name == "AdamW":
        # One fused kernel for all LoRA tensors instead of a loop over hundreds of small ones: several times faster.
        extra = {} if "fused" in options else {"fused": True}
    elif kind.name in ("SGDNesterov", "SGDNesterov8bit"):
        extra["nesterov"] = True
    elif kind.name == "AdaFactor" and options["relative_step"]:
        # Adafactor computes its own step size; the learning rate only starts the "adafactor" schedule's report.
        if len({group.get("lr") for group in param_groups}) > 1:
            notes.append("Adafactor with relative_step finds its own learning rate, so unet_lr and text_encoder_lr "
                         "are not used.")
        param_groups = [{key: value for key, value in group.items() if key != "lr"} for group in param_groups]
        lr = None
        notes.append("Adafactor with relative_step finds its own learning rate; the learning rate schedule is not "
                     "used.")
    if kind.learning_rate_free and learning_rate <= LOW_LEARNING_RATE:
        notes.append(f"{kind.name} finds its own step size and wants learning_rate around 1.0, not {learning_rate}.")
    try:
        optimizer = cls(param_groups, lr=lr, **{**options, **extra})
    except (TypeError, ValueError) as exc:
        raise UserFacingError(
            f"The optimizer {kind.name} refuses the options {options} ({exc}); fix optimizer_args."
        ) from None
    description = f"{cls.__module__}.{cls.__name__}"
    if options:
        description += "(" + ",".join(f"{key}={value}" for key, value in options.items()) + ")"
    return BuiltOptimizer(optimizer, kind, description, follows_lr_schedule(kind, options), notes)
