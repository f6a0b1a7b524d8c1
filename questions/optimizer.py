"""How the LoRA learns: the optimizer and the learning rates."""

from __future__ import annotations

from wizard.config import OPTIMIZERS, TrainConfig
from wizard.question import Question

from questions.build import field_help

LEARNING_RATE_FIELDS = ("learning_rate", "unet_lr", "text_encoder_lr")
DADAPTATION_LEARNING_RATE = 1.0  # DAdaptation finds the step size itself; the learning rate only scales it


def _store_optimizer(answer: str, config: TrainConfig) -> None:
    """DAdaptation needs decouple=True (or LoRAs come out blank) and learning rates of 1.0.

    Learning rates the user has not typed follow the optimizer both ways, so switching away from DAdaptation
    in the summary does not leave a learning rate of 1.0 behind for AdamW.
    """
    config.set("optimizer_type", answer)
    arguments = config.get("optimizer_args")
    if answer == "DAdaptation":
        arguments["decouple"] = "True"
    else:
        arguments.pop("decouple", None)
    config.set("optimizer_args", arguments, origin=config.origin("optimizer_args"))
    for name in LEARNING_RATE_FIELDS:
        if config.origin(name) != "default":
            continue
        if answer == "DAdaptation":
            config.set(name, DADAPTATION_LEARNING_RATE, origin="default")
        else:
            config.reset(name)


QUESTIONS: list[Question] = [
    Question(
        id="optimizer", kind="choice", field="optimizer_type", choices=OPTIMIZERS, store=_store_optimizer,
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
