"""How long training runs and how the learning rate moves over it."""

from __future__ import annotations

from wizard.config import TrainConfig
from wizard.question import Question

from questions.build import field_help, gate, is_set
from questions.optimizer import uses_lr_schedule

# In the order the popups showed them, the default first.
SCHEDULERS = ("cosine_with_restarts", "cosine", "polynomial", "constant", "constant_with_warmup", "linear")
LENGTH_UNITS = ("epochs", "steps")
STEPS_WHEN_UNSET = 1600  # sd-scripts' own default number of steps
WARMUP_SUGGESTED = 0.05


def _store_length_unit(answer: str, config: TrainConfig) -> None:
    if answer == "steps":
        if config.get("max_steps") is None:
            config.set("max_steps", STEPS_WHEN_UNSET, origin="default")
    else:
        config.set("max_steps", None)


QUESTIONS: list[Question] = [
    Question(
        id="scheduler", kind="choice", field="scheduler", choices=SCHEDULERS,
        when=uses_lr_schedule,  # schedule-free optimizers and Adafactor's relative step keep their own
        text="Which learning-rate scheduler?",
        help=field_help("scheduler"),
    ),
    Question(
        id="cosine_restarts", kind="int", field="cosine_restarts",
        when=lambda config: config.get("scheduler") == "cosine_with_restarts",
        text="How many restarts?",
        help=field_help("cosine_restarts"),
    ),
    Question(
        id="scheduler_power", kind="float", field="scheduler_power",
        when=lambda config: config.get("scheduler") == "polynomial",
        text="Power of the polynomial decay?",
        help=field_help("scheduler_power"),
    ),
    Question(
        id="batch_size", kind="int", field="batch_size",
        text="Batch size? (12 GB of VRAM at 512 px fits about 6)",
        help=field_help("batch_size"),
    ),
    Question(
        id="length_unit", kind="choice", field=None, fields=("max_steps",), choices=LENGTH_UNITS,
        current=lambda config: "steps" if config.get("max_steps") is not None else "epochs",
        store=_store_length_unit,
        text="Set the length of training in epochs or in steps?",
        help="Epochs count passes over all images (times their repeats); steps count batches. Default epochs.",
    ),
    Question(
        id="num_epochs", kind="int", field="num_epochs",
        when=lambda config: config.get("max_steps") is None,
        text="How many epochs?",
        help=field_help("num_epochs"),
    ),
    Question(
        id="max_steps", kind="int", field="max_steps",
        when=lambda config: config.get("max_steps") is not None,
        text="How many steps?",
        help=field_help("max_steps"),
    ),
    gate(
        "use_warmup", "Warm the learning rate up at the start?", field_help("warmup_lr_ratio"),
        fields=("warmup_lr_ratio",),
        when=lambda config: config.get("scheduler") != "constant",
        start_with={"warmup_lr_ratio": lambda config: WARMUP_SUGGESTED},
    ),
    Question(
        id="warmup_lr_ratio", kind="float", field="warmup_lr_ratio",
        when=lambda config: config.get("scheduler") != "constant" and is_set("warmup_lr_ratio")(config),
        text="Share of the steps used to warm up (0 to 1)?",
        help=field_help("warmup_lr_ratio"),
    ),
]
