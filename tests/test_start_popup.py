"""The first popup, "What would you like to do?": train, queue, demo, and the side tools that are registered."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import questions
from test_graph_fixtures import Project, make_project
from wizard.app import EXIT_FAILED, EXIT_OK, main
from wizard.askers.base import Asker
from wizard.askers.scripted import ScriptedAsker
from wizard.config import TrainConfig
from wizard.question import CANCEL, Dropped, Question

BUILT_IN = ("Train a LoRA", "Train again like a LoRA", "Run a queue of saved settings", "Try the built-in demo")


@dataclass
class Result:
    ok: bool
    message: str = ""
    lora_path: str | None = None


class RecordingAsker(ScriptedAsker):
    """A ScriptedAsker that also keeps the choices each question offered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.choices: dict[str, tuple[str, ...]] = {}

    def ask(self, question: Question, default: Any, *, can_go_back: bool, error: str | None = None) -> Any:
        self.choices[question.id] = question.choices
        return super().ask(question, default, can_go_back=can_go_back, error=error)


class Session:
    """Runs the wizard with popups answered by a script; records what was trained, demoed and which tool ran."""

    def __init__(self, tools: dict[str, int] | None = None) -> None:
        self.trained: list[tuple[TrainConfig, tuple[int, int] | None]] = []
        self.demos: list[str | None] = []
        self.tool_calls: list[tuple[str, list[str]]] = []
        self.tools = {name: self._tool(name, code) for name, code in (tools or {}).items()}

    def _tool(self, name: str, code: int):
        return lambda rest, asker=None: self.tool_calls.append((name, rest)) or code

    def train(self, config: TrainConfig, asker: Asker, *, run_position: tuple[int, int] | None = None) -> Result:
        self.trained.append((config, run_position))
        return Result(True, lora_path="/loras/x.safetensors")

    def demo(self, folder: str | None) -> Result:
        self.demos.append(folder)
        return Result(True)

    def run(self, asker: ScriptedAsker) -> int:
        return main([], questions.FLOWS, train=self.train, demo=self.demo, tools=self.tools, asker=asker,
                    preflight=lambda config, asker: "start")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


def test_the_first_popup_offers_train_queue_and_demo_and_defaults_to_training(project: Project):
    session = Session()
    asker = RecordingAsker(project.path_answers())
    assert session.run(asker) == EXIT_OK
    assert asker.asked[0] == "what_to_do" and asker.choices["what_to_do"] == BUILT_IN
    assert asker.defaults["what_to_do"] == "Train a LoRA"
    assert asker.asked[1] == "load_json" and "queue_folder" not in asker.asked  # the training's starter questions
    (config, position), = session.trained
    assert position is None and config.get("img_folder") == str(project.img_folder)
    assert session.demos == [] and len(asker.summaries) == 1


def test_choosing_the_queue_asks_its_folder_and_runs_it(project: Project):
    (project.json_folder / "one.json").write_text(json.dumps({"config_version": 1, "net_dim": 4}), encoding="utf-8")
    session = Session()
    asker = ScriptedAsker({"what_to_do": "Run a queue of saved settings", "queue_folder": str(project.json_folder)})
    assert session.run(asker) == EXIT_OK
    assert asker.asked == ["what_to_do", "queue_folder"]
    assert [(config.get("net_dim"), position) for config, position in session.trained] == [(4, (1, 1))]
    (kind, title, message), = asker.messages
    assert (kind, title) == ("info", "Queue finished") and "1 of 1 trainings worked" in message


def test_the_queue_folder_must_be_chosen_and_cancel_can_stop_the_wizard(project: Project):
    session = Session()
    asker = ScriptedAsker({"what_to_do": "Run a queue of saved settings", "queue_folder": [CANCEL]}, confirms=[True])
    assert session.run(asker) == EXIT_FAILED
    assert session.trained == [] and asker.messages[0][1] == "Stop the wizard?"


def test_choosing_the_demo_runs_it_and_asks_nothing_more():
    session = Session()
    asker = ScriptedAsker({"what_to_do": "Try the built-in demo"})
    assert session.run(asker) == EXIT_OK
    assert session.demos == [None] and asker.asked == ["what_to_do"] and session.trained == []


def test_a_registered_tool_appears_and_runs_with_no_arguments():
    session = Session(tools={"resize": 0, "sharpen": 3})
    asker = RecordingAsker({"what_to_do": "Resize a LoRA"})
    assert session.run(asker) == EXIT_OK
    # a declared tool shows its label; a tool nobody described shows its name
    assert asker.choices["what_to_do"] == BUILT_IN + ("Resize a LoRA", "The sharpen tool")
    assert session.tool_calls == [("resize", [])] and asker.asked == ["what_to_do"]

    asker = ScriptedAsker({"what_to_do": "The sharpen tool"})
    assert session.run(asker) == 3  # the tool's own exit code
    assert session.tool_calls[-1] == ("sharpen", [])


def test_tools_that_are_not_registered_are_not_offered_and_cannot_be_chosen():
    session = Session()
    asker = RecordingAsker({"what_to_do": ["Merge LoRAs", "Try the built-in demo"]})
    assert session.run(asker) == EXIT_OK
    assert asker.choices["what_to_do"] == BUILT_IN
    assert asker.errors == [("what_to_do", "Choose one of: " + ", ".join(BUILT_IN) + ".")]
    assert session.demos == [None] and session.tool_calls == []


def test_closing_the_first_popup_leaves_without_asking_since_nothing_would_be_lost():
    session = Session(tools={"resize": 0})
    asker = ScriptedAsker({"what_to_do": CANCEL})
    assert session.run(asker) == EXIT_FAILED  # nothing was done: not a success for a script that waits on it
    assert asker.asked == ["what_to_do"] and session.trained == session.demos == session.tool_calls == []
    assert asker.messages == []


def test_a_settings_file_dropped_on_the_first_popup_trains_with_its_settings(project: Project):
    saved = project.json_folder / "mychar.json"
    saved.write_text(json.dumps({"config_version": 1, "net_dim": 12, "base_model": str(project.base_model),
                                 "img_folder": str(project.img_folder), "output_folder": str(project.output_folder)}),
                     encoding="utf-8")
    session = Session()
    asker = ScriptedAsker({"what_to_do": Dropped(str(saved))})
    assert session.run(asker) == EXIT_OK
    (config, _), = session.trained
    assert config.get("net_dim") == 12 and config.origin("net_dim") == "loaded"
    assert "load_json" not in asker.asked and "base_model" not in asker.asked  # the file said them


def test_a_dropped_file_that_is_not_settings_says_so_and_the_first_popup_comes_back(project: Project):
    image = project.img_folder / "10_mychar" / "a.png"
    image.write_bytes(b"not really")
    broken = project.json_folder / "broken.json"
    broken.write_text("{ not json", encoding="utf-8")
    session = Session()
    asker = ScriptedAsker({"what_to_do": [Dropped(str(image)), Dropped(str(broken)), "Try the built-in demo"]})
    assert session.run(asker) == EXIT_OK
    assert asker.asked == ["what_to_do"] * 3 and session.trained == [] and session.demos == [None]
    (first, second) = asker.messages
    assert first == ("error", "Could not load the settings", "a.png is not a settings file; drop a settings .json or "
                     ".toml file, or a LoRA .safetensors, to train with its settings.")
    assert second[:2] == ("error", "Could not load the settings") and "broken.json" in second[2]


def test_every_side_tool_has_an_entry_and_the_built_in_ones_come_first():
    ids = [entry.id for entry in questions.FLOWS["what_to_do"]]
    assert ids[:4] == ["train", "retrain", "queue", "demo"]
    assert {"resize", "merge", "extract", "images"} <= set(ids)
    assert all(entry.text and entry.help for entry in questions.FLOWS["what_to_do"])
