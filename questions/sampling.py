"""Test images made while training, to watch the LoRA learn."""

from __future__ import annotations

from wizard.config import TrainConfig
from wizard.question import Question

from questions.build import field_help, gate, is_set
from questions.checks import existing_file

SAMPLERS = ("ddim", "euler", "euler_a", "dpmsolver++", "k_euler", "k_euler_a")  # the popups' choice, default first
SAMPLE_UNITS = ("steps", "epochs")
SAMPLE_STEPS_WHEN_UNSET = 200  # the popups' value
SAMPLE_EPOCHS_WHEN_UNSET = 1


def _prompts_chosen(config: TrainConfig) -> bool:
    return config.get("sample_prompts") is not None


def _store_prompts(answer: str | None, config: TrainConfig) -> None:
    config.set("sample_prompts", answer)
    if answer is not None and config.get("sample_every_n_steps") is None and config.get("sample_every_n_epochs") is None:
        config.set("sample_every_n_steps", SAMPLE_STEPS_WHEN_UNSET, origin="default")


def _store_unit(answer: str, config: TrainConfig) -> None:
    """Exactly one cadence is set. The seed tool wrote epochs to a misspelled key, so they never sampled: fixed."""
    if answer == "epochs":
        config.set("sample_every_n_epochs", config.get("sample_every_n_epochs") or SAMPLE_EPOCHS_WHEN_UNSET)
        config.set("sample_every_n_steps", None)
    else:
        config.set("sample_every_n_steps", config.get("sample_every_n_steps") or SAMPLE_STEPS_WHEN_UNSET)
        config.set("sample_every_n_epochs", None)


QUESTIONS: list[Question] = [
    gate(
        "sample_images", "Make test images while training? (needs a .txt file with one prompt per line)",
        "Test images show how the LoRA learns and help pick the best epoch; each costs a few seconds. Default no.",
        fields=("sample_prompts", "sample_every_n_steps", "sample_every_n_epochs"),
    ),
    Question(
        id="sample_prompts", kind="file", field="sample_prompts", extensions=("txt",), store=_store_prompts,
        text="Choose the prompts file (.txt, one prompt per line).",
        help=field_help("sample_prompts"),
        validate=existing_file("prompts file", ("txt",), required=False),
    ),
    Question(
        id="sample_sampler", kind="choice", field="sample_sampler", choices=SAMPLERS, when=_prompts_chosen,
        text="Which sampler for the test images?",
        help=field_help("sample_sampler"),
    ),
    Question(
        id="sample_unit", kind="choice", field=None, fields=("sample_every_n_steps", "sample_every_n_epochs"),
        choices=SAMPLE_UNITS, when=_prompts_chosen, store=_store_unit,
        current=lambda config: "epochs" if config.get("sample_every_n_epochs") is not None else "steps",
        text="Make test images every few steps or every few epochs?",
        help="Steps give many images on short runs; epochs one set per pass over the images. Default steps.",
    ),
    Question(
        id="sample_every_n_steps", kind="int", field="sample_every_n_steps",
        when=lambda config: _prompts_chosen(config) and is_set("sample_every_n_steps")(config),
        text="Make test images every how many steps?",
        help=field_help("sample_every_n_steps"),
    ),
    Question(
        id="sample_every_n_epochs", kind="int", field="sample_every_n_epochs",
        when=lambda config: _prompts_chosen(config) and is_set("sample_every_n_epochs")(config),
        text="Make test images every how many epochs?",
        help=field_help("sample_every_n_epochs"),
    ),
]
