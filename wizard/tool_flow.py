"""The side tools' popups: a tool's questions walked into its own small config, the same summary with Edit / Save
JSON / Start as training, then the tool runs and says what it wrote (or, in one sentence, what went wrong).

A tool is declared in `questions/` as a `ToolFlow`: its fields (declared like the training settings, with
`wizard.config.Field`), its questions, the function that runs it, and the `sd_scripts.tools` module whose `main`
is its command line. `tool_commands` turns the declared tools into what `wizard.app.main` runs for `--tool NAME`
(options after the name go to the tool's command line; none opens its popups) and for the first popup's entries.
"""

from __future__ import annotations

import copy
import importlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sd_scripts.errors import UserFacingError
from wizard.askers.base import Asker, SummaryRow
from wizard.config import ConfigError, Field, Origin, check_value
from wizard.graph import walk, written_fields
from wizard.question import Question
from wizard.summary import format_value

EXIT_OK, EXIT_FAILED = 0, 1
Progress = Callable[[int, int, str], None]
SAVE_FOLDER_QUESTION = Question(id="tool_settings_folder", kind="folder",
                                text="Choose the folder to save these tool settings in.",
                                help="A JSON file named after the tool and the time is written there.")


class ToolConfig:
    """The answers of one tool run: a value and an origin per declared field (the walker's view of TrainConfig)."""

    def __init__(self, fields: Sequence[Field]) -> None:
        self.fields = tuple(fields)
        self.cuda = False
        self._by_name = {field.name: field for field in self.fields}
        self._values: dict[str, Any] = {field.name: copy.deepcopy(field.default) for field in self.fields}
        self._origins: dict[str, Origin] = {field.name: "default" for field in self.fields}

    def _field(self, name: str) -> Field:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"'{name}' is not a setting of this tool; check the spelling.") from None

    def get(self, name: str) -> Any:
        return copy.deepcopy(self._values[self._field(name).name])

    def set(self, name: str, value: Any, origin: Origin = "asked") -> None:
        self._values[name] = check_value(self._field(name), copy.deepcopy(value))
        self._origins[name] = origin

    def origin(self, name: str) -> Origin:
        return self._origins[self._field(name).name]

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._values)

    def copy(self) -> ToolConfig:
        twin = ToolConfig(self.fields)
        twin._values, twin._origins = copy.deepcopy(self._values), dict(self._origins)
        return twin


@dataclass(frozen=True)
class ToolFlow:
    """A side tool as the wizard sees it (see the module docstring)."""

    name: str  # as in --tool NAME and the first popup's entry id
    title: str
    fields: tuple[Field, ...]
    questions: tuple[Question, ...]
    run: Callable[[ToolConfig, Progress], str]  # does the work, returns what to tell the user
    cli_module: str  # e.g. "sd_scripts.tools.resize_lora"
    start_label: str = "Start"  # the summary's start button, e.g. "Start resizing"


def run_tool_flow(flow: ToolFlow, asker: Asker, *, progress: Progress | None = None) -> int:
    """Ask, summarise, run; 0 when the tool wrote its files, 1 when cancelled or refused."""
    config = ToolConfig(flow.fields)
    if walk(flow.questions, config, asker) == "cancelled":
        return EXIT_FAILED
    while True:
        action = asker.summary(summary_rows(config, flow.title), f"Check the settings: {flow.title}",
                               start_label=flow.start_label)
        if action == "cancel":
            return EXIT_FAILED
        if action == "start":
            break
        if action == "save":
            _save_settings(flow, config, asker)
        elif isinstance(action, tuple) and action[0] == "edit":
            walk(flow.questions, config, asker, skip_loaded=False,
                 only=lambda question: action[1] in written_fields(question))
    try:
        message = flow.run(config, progress or _terminal_progress(flow.title))
    except UserFacingError as problem:
        asker.error(f"{flow.title} did not run", str(problem))
        return EXIT_FAILED
    asker.info(f"{flow.title}: done", message)
    return EXIT_OK


def summary_rows(config: ToolConfig, topic: str) -> list[SummaryRow]:
    """One row per field of the tool under one heading (`topic`), what the user changed first and in the normal
    colour, as the training summary shows its settings."""
    return [SummaryRow(field.name, field.label, format_value(config.get(field.name)), config.origin(field.name),
                       topic=topic, changed=config.origin(field.name) != "default"
                       and config.get(field.name) != field.default)
            for field in config.fields]


def tool_commands(flows: Mapping[str, ToolFlow]) -> dict[str, Callable[..., int]]:
    """`--tool NAME [options]` and the first popup's entries: options go to the tool's command line, none (or a
    choice in the first popup, with its asker) opens the tool's popups."""

    def command_for(flow: ToolFlow) -> Callable[..., int]:
        def command(argv: list[str], asker: Asker | None = None) -> int:
            if argv:
                return importlib.import_module(flow.cli_module).main(list(argv))
            if asker is None:
                from wizard.app import choose_asker

                asker = choose_asker()
            return run_tool_flow(flow, asker)

        return command

    return {name: command_for(flow) for name, flow in flows.items()}


def _save_settings(flow: ToolFlow, config: ToolConfig, asker: Asker) -> None:
    from sd_scripts.saving.atomic import write_atomically  # imported here: sd_scripts.saving loads torch

    folder = asker.ask(SAVE_FOLDER_QUESTION, None, can_go_back=False)
    if not isinstance(folder, str) or not Path(folder).is_dir():
        return
    path = Path(folder) / f"{flow.name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    text = json.dumps({"tool": flow.name, **config.to_dict()}, indent=2)
    try:
        write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    except OSError as problem:
        asker.error("Could not save the settings", f"{path} could not be written ({problem.strerror}).")
        return
    asker.info("Settings saved", f"The settings were saved to {path}.")


def _terminal_progress(title: str) -> Progress:
    from sd_scripts.tools.cli import tqdm_progress

    return tqdm_progress(title)
