"""The first popup (what to do) and the starter questions of a training.

CHOICES are the entries of the first popup, "What would you like to do?": an entry's `text` is the button, its `help`
one line under the question, and its `id` what `wizard.app` does with it: "train", "queue", "demo", or the name a
side tool is registered under (`popup_main.py --tool NAME`). A side tool's entry is offered only when that tool
exists. The choice steers this session only, so the app keeps it; it is never a setting and never saved in a JSON.

QUEUE_QUESTIONS ask for the queue's folder. QUESTIONS are the seed tool's starter questions of a training: load saved
settings (the wizard's JSON, a Kohya_ss GUI JSON or an sd-scripts TOML, told apart by their content; and choose new
folders), or save these ones (as JSON or sd-scripts TOML, under a name, perhaps without training). RETRAIN_QUESTIONS
ask for a LoRA whose metadata gives the settings ("Train again like a LoRA"). Their answers live in the config's
JSON fields (load_json_path, json_load_skip_list, save_json_*, settings_format), which a loaded file never
overwrites; `wizard.app` reads them after this flow to load the file or save it.
"""

from __future__ import annotations

from typing import Any

from sd_scripts.errors import UserFacingError
from wizard.config import TrainConfig
from wizard.formats.settings_file import EXTENSIONS, detect
from wizard.question import Question

from questions.build import field_help, gate, text_or_none
from questions.checks import Check, existing_file, existing_folder

# The paths the "choose new folders" answer takes out of a loaded JSON, so the training questions ask them again.
NEW_FOLDER_FIELDS = ["base_model", "img_folder", "output_folder", "change_output_name"]


def _choice(id: str, text: str, help: str) -> Question:
    return Question(id=id, kind="info", text=text, help=help)


CHOICES: list[Question] = [
    _choice("train", "Train a LoRA",
            "answer the questions about your images and settings, check the summary, and train."),
    _choice("retrain", "Train again like a LoRA",
            "choose a LoRA (yours, or one made with sd-scripts or the Kohya_ss GUI); the settings it was trained "
            "with are read from it and only the rest is asked."),
    _choice("queue", "Run a queue of saved settings",
            "train every settings file (.json or .toml) of a folder one after the other, without more questions."),
    _choice("demo", "Try the built-in demo",
            "train a tiny LoRA on built-in pictures in a minute or two, to check that everything works "
            "(the SDXL demo: popup_main.py --demo sdxl)."),
    _choice("resize", "Resize a LoRA", "make a LoRA file smaller by lowering its dimension (rank)."),
    _choice("merge", "Merge LoRAs", "combine several LoRAs into one, or bake a LoRA into a model."),
    _choice("extract", "Extract a LoRA or LoCon", "turn the difference between two models into a LoRA or LoCon."),
    _choice("merge_lycoris", "Merge a LyCORIS into a model",
            "bake a LoCon, LoHa, LoKr or IA3 file into a checkpoint at a weight."),
    _choice("images", "Resize images", "make smaller copies of your training images at several sizes."),
]

QUEUE_QUESTIONS: list[Question] = [
    Question(
        id="queue_folder", kind="folder", field="multi_run_folder",
        text="Choose the folder with the settings files (.json or .toml) to train.",
        help=field_help("multi_run_folder"),
        validate=existing_folder("queue folder", required=True),
    ),
]


def settings_file_problem(what: str, extensions: tuple[str, ...]) -> Check:
    """An existing file of `extensions` that holds settings the wizard reads (by its content), or one sentence."""
    exists = existing_file(what, extensions, required=False)

    def check(answer: Any, config: TrainConfig) -> str | None:
        problem = exists(answer, config)
        if problem is not None or answer is None:
            return problem
        try:
            detect(answer)
        except UserFacingError as error:
            return str(error)
        return None

    return check


def _loading(config: TrainConfig) -> bool:
    return config.get("load_json_path") is not None


def _answering(config: TrainConfig) -> bool:
    return config.get("load_json_path") is None


def _saving(config: TrainConfig) -> bool:
    return _answering(config) and config.get("save_json_folder") is not None


NEW_FOLDERS = Question(
    id="new_folders", kind="yesno", field="json_load_skip_list", when=_loading,
    current=lambda config: bool(config.get("json_load_skip_list")),
    store=lambda answer, config: config.set("json_load_skip_list", NEW_FOLDER_FIELDS if answer else None),
    text="Choose a new base model, image folder and output folder instead of the ones in the file?",
    help="Yes keeps every other setting of the file and asks for the base model, the image folder, the output "
         "folder and the output name again. Default no.",
)

RETRAIN_QUESTIONS: list[Question] = [
    Question(
        id="retrain_lora", kind="file", field="load_json_path", extensions=("safetensors",),
        text="Choose the LoRA to train again like (.safetensors).",
        help="Its ss_* metadata holds how it was trained: network, optimizer, learning rates, length, resolution, "
             "buckets, captions. Those are kept; the base model, the output folder and anything the file does not "
             "hold are asked. The image folders are taken when they are found beside the LoRA.",
        validate=settings_file_problem("LoRA", ("safetensors",)),
    ),
    NEW_FOLDERS,
]

QUESTIONS: list[Question] = [
    gate(
        "load_json", "Load saved settings from a file? (its settings are not asked again)",
        field_help("load_json_path"),
        fields=("load_json_path",),
    ),
    Question(
        id="load_json_file", kind="file", field="load_json_path", extensions=EXTENSIONS,
        text="Choose the settings file (the wizard's .json, a Kohya_ss GUI .json, an sd-scripts .toml, or a LoRA).",
        help=field_help("load_json_path"),
        validate=settings_file_problem("settings file", EXTENSIONS),
    ),
    NEW_FOLDERS,
    gate(
        "save_json", "Save your settings as a JSON file (to reuse them or queue them later)?",
        field_help("save_json_folder"),
        fields=("save_json_folder",), when=_answering,
    ),
    Question(
        id="save_json_folder", kind="folder", field="save_json_folder", when=_answering,
        text="Choose the folder to save the settings file in.",
        help=field_help("save_json_folder"),
        validate=existing_folder("settings folder", required=False),
    ),
    Question(
        id="settings_format", kind="choice", field="settings_format", when=_saving, choices=("json", "toml"),
        text="Save them as the wizard's JSON, or as an sd-scripts TOML (--config_file)?",
        help=field_help("settings_format"),
    ),
    Question(
        id="save_json_name", kind="text", field="save_json_name", when=_saving,
        store=text_or_none("save_json_name"),
        text="A name for the settings file? (leave empty for config-<time>.json)",
        help=field_help("save_json_name"),
    ),
    Question(
        id="save_json_only", kind="yesno", field="save_json_only", when=_saving,
        text="Only save the settings, without training now? (good for filling a queue)",
        help=field_help("save_json_only"),
    ),
]
