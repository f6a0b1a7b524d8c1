"""How the LoRA learns: the optimizer and the learning rates."""

from __future__ import annotations

from sd_scripts.errors import UserFacingError
from sd_scripts.optimizer_kinds import (
    OFFERED_OPTIMIZERS,
    OPTIMIZER_KINDS,
    WIZARD_ARG_NAMES,
    follows_lr_schedule,
    parse_optimizer_args,
    resolve_optimizer,
)
from wizard.config import TrainConfig
from wizard.question import Question

from questions.build import field_help

LEARNING_RATE_FIELDS = ("learning_rate", "unet_lr", "text_encoder_lr")
LEARNING_RATE_FREE_RATE = 1.0  # D-Adaptation and Prodigy find the step size d themselves; the rate only scales it
CONSTANT_SCHEDULE = "constant"


def uses_lr_schedule(config: TrainConfig) -> bool:
    """Whether the optimizer follows a learning-rate schedule: not schedule-free ones, not Adafactor's relative step."""
    items = [f"{key}={value}" for key, value in config.get("optimizer_args").items()]
    try:
        return follows_lr_schedule(resolve_optimizer(config.get("optimizer_type")), parse_optimizer_args(items))
    except UserFacingError:  # unreadable options are reported by the pre-flight check; ask the schedule meanwhile
        return True


def _store_optimizer(answer: str, config: TrainConfig) -> None:
    """Put in what the chosen optimizer needs, and take out what the previous one needed.

    The learning-rate-free ones get learning rates of 1.0 and their options (DAdaptation needs decouple=True or
    LoRAs come out blank); an optimizer with its own schedule gets the constant schedule. Values the user has not
    typed follow the optimizer both ways, so switching back to AdamW in the summary leaves no 1.0 behind.
    """
    kind = OPTIMIZER_KINDS[answer]
    config.set("optimizer_type", answer)
    arguments = config.get("optimizer_args")
    for key in WIZARD_ARG_NAMES:
        arguments.pop(key, None)
    arguments.update(kind.wizard_args)
    config.set("optimizer_args", arguments, origin=config.origin("optimizer_args"))
    for name in LEARNING_RATE_FIELDS:
        if config.origin(name) != "default":
            continue
        if kind.learning_rate_free:
            config.set(name, LEARNING_RATE_FREE_RATE, origin="default")
        else:
            config.reset(name)
    if config.origin("scheduler") == "default":
        if uses_lr_schedule(config):
            config.reset("scheduler")
        else:
            config.set("scheduler", CONSTANT_SCHEDULE, origin="default")


QUESTIONS: list[Question] = [
    Question(
        id="optimizer", kind="choice", field="optimizer_type", choices=OFFERED_OPTIMIZERS, store=_store_optimizer,
        text="Which optimizer?",
        help=field_help("optimizer_type"),
    ),
    Question(
        id="learning_rate", kind="float", field="learning_rate",
        text="Learning rate?",
        help=field_help("learning_rate"),
    ),
    Question(
        id="unet_lr", kind="float", field="unet_lr",
        text="U-Net learning rate? (leave empty to use the learning rate)",
        help=field_help("unet_lr"),
    ),
    Question(
        id="text_encoder_lr", kind="float", field="text_encoder_lr",
        text="Text encoder learning rate? (leave empty to use the learning rate)",
        help=field_help("text_encoder_lr"),
    ),
]
