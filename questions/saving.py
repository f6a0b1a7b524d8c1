"""Where and how the LoRA is saved: the output folder and name, epoch saves, precision, the metadata comment."""

from __future__ import annotations

from wizard.question import Question

from questions.build import field_help, gate, is_set, text_or_none
from questions.checks import existing_folder

SAVE_PRECISIONS = ("fp16", "bf16", "float")  # the default first

# Asked right after the image folder, as the popups did: the three paths belong together.
PATH_QUESTIONS: list[Question] = [
    Question(
        id="output_folder", kind="folder", field="output_folder",
        text="Choose the output folder for the LoRA.",
        help=field_help("output_folder"),
        validate=existing_folder("output folder", required=True),
    ),
    Question(
        id="output_name", kind="text", field="change_output_name", store=text_or_none("change_output_name"),
        text="Name of the LoRA file? (leave empty for 'last')",
        help=field_help("change_output_name"),
    ),
]

QUESTIONS: list[Question] = [
    gate(
        "save_epochs", "Save a LoRA every few epochs while it trains?", field_help("save_every_n_epochs"),
        fields=("save_every_n_epochs",),
        start_with={"save_every_n_epochs": lambda config: 1},
    ),
    Question(
        id="save_every_n_epochs", kind="int", field="save_every_n_epochs", when=is_set("save_every_n_epochs"),
        text="Save every how many epochs?",
        help=field_help("save_every_n_epochs"),
    ),
    Question(
        id="save_precision", kind="choice", field="save_precision", choices=SAVE_PRECISIONS,
        text="Which precision for the saved LoRA?",
        help=field_help("save_precision"),
    ),
    Question(
        id="training_comment", kind="text", field="training_comment", store=text_or_none("training_comment"),
        text="A comment to store in the LoRA, e.g. its trigger words? (optional)",
        help=field_help("training_comment"),
    ),
]
