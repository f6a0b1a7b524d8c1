"""The starter questions: run a queue, load saved settings, or save these ones; they decide what comes next.

Their answers live in the config's JSON fields (multi_run_folder, load_json_path, save_json_*), which a loaded file
never overwrites; `wizard.app` reads them after this flow to run the queue, load the file or save it.
"""

from __future__ import annotations

from wizard.config import TrainConfig
from wizard.question import Question

from questions.build import field_help, gate, text_or_none
from questions.checks import existing_file, existing_folder

# The paths the "choose new folders" answer takes out of a loaded JSON, so the training questions ask them again.
NEW_FOLDER_FIELDS = ["base_model", "img_folder", "output_folder", "change_output_name"]


def _no_queue(config: TrainConfig) -> bool:
    return config.get("multi_run_folder") is None


def _loading(config: TrainConfig) -> bool:
    return _no_queue(config) and config.get("load_json_path") is not None


def _answering(config: TrainConfig) -> bool:
    return _no_queue(config) and config.get("load_json_path") is None


def _saving(config: TrainConfig) -> bool:
    return _answering(config) and config.get("save_json_folder") is not None


QUESTIONS: list[Question] = [
    gate(
        "queue", "Run several trainings in a row from a folder of saved settings (JSON files)?",
        "A queue trains every .json file of a folder one after another, in name order, without more questions; "
        "finished files move to complete/, failed ones to failed/ with the reason. Default no.",
        fields=("multi_run_folder",),
    ),
    Question(
        id="queue_folder", kind="folder", field="multi_run_folder",
        text="Choose the folder with the JSON files to train.",
        help=field_help("multi_run_folder"),
        validate=existing_folder("queue folder", required=False),
    ),
    gate(
        "load_json", "Load saved settings from a JSON file? (its settings are not asked again)",
        field_help("load_json_path"),
        fields=("load_json_path",), when=_no_queue,
    ),
    Question(
        id="load_json_file", kind="file", field="load_json_path", extensions=("json",), when=_no_queue,
        text="Choose the settings file (.json).",
        help=field_help("load_json_path"),
        validate=existing_file("settings file", ("json",), required=False),
    ),
    Question(
        id="new_folders", kind="yesno", field="json_load_skip_list", when=_loading,
        current=lambda config: bool(config.get("json_load_skip_list")),
        store=lambda answer, config: config.set("json_load_skip_list", NEW_FOLDER_FIELDS if answer else None),
        text="Choose a new base model, image folder and output folder instead of the ones in the file?",
        help="Yes keeps every other setting of the file and asks for the base model, the image folder, the output "
             "folder and the output name again. Default no.",
    ),
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
