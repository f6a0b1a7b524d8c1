"""The command line of popup_main.py: options, exit codes, and the whole guided session with scripted answers."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import questions
from test_graph_fixtures import Project, make_project
from wizard.app import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from wizard.askers.base import Asker
from wizard.askers.scripted import ScriptedAsker
from wizard.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    ok: bool
    message: str = ""
    lora_path: str | None = None


class FakeTrainer:
    """Records the configs it was handed instead of training."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.configs: list[TrainConfig] = []
        self.run_positions: list[tuple[int, int] | None] = []

    def __call__(self, config: TrainConfig, asker: Asker, *, run_position: tuple[int, int] | None = None) -> Result:
        self.configs.append(config)
        self.run_positions.append(run_position)
        return Result(self.ok, "" if self.ok else "It failed.")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


def settings_file(project: Project, **values) -> Path:
    path = project.json_folder / "mine.json"
    data = {"config_version": 1, **{k: str(v) for k, v in project.path_answers().items()}, **values}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_help_lists_every_option_and_imports_nothing_heavy():
    result = subprocess.run([sys.executable, "popup_main.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for option in ("--load-json", "--no-popups", "--queue", "--demo", "--tool", "--console", "--help"):
        assert option in result.stdout


def test_load_json_without_popups_trains_the_loaded_settings(project: Project):
    trainer = FakeTrainer()
    path = settings_file(project, net_dim=8)
    assert main(["--load-json", str(path), "--no-popups"], questions.FLOWS, train=trainer) == EXIT_OK
    (config,) = trainer.configs
    assert config.get("net_dim") == 8 and config.origin("net_dim") == "loaded"
    assert config.get("img_folder") == str(project.img_folder)


def test_a_failed_training_gives_exit_code_1(project: Project):
    path = settings_file(project)
    assert main(["--load-json", str(path), "--no-popups"], questions.FLOWS, train=FakeTrainer(ok=False)) == EXIT_FAILED


def test_queue_without_popups_runs_the_folder(project: Project, capsys):
    settings_file(project, net_dim=4)
    trainer = FakeTrainer()
    assert main(["--queue", str(project.json_folder), "--no-popups"], questions.FLOWS, train=trainer) == EXIT_OK
    assert [config.get("net_dim") for config in trainer.configs] == [4]
    assert trainer.run_positions == [(1, 1)]
    assert (project.json_folder / "complete" / "mine.json").exists()
    assert "Queue finished: 1 of 1 trainings worked" in capsys.readouterr().out


@pytest.mark.parametrize("argv, sentence", [
    (["--load-json", "missing.json", "--no-popups"], "The settings file missing.json does not exist"),
    (["--queue", "no_such_folder"], "The queue folder no_such_folder does not exist"),
    (["--no-popups"], "--no-popups needs settings to run from"),
    (["--tool", "nope"], "There is no tool named 'nope'; the tools are: resize."),
    (["--frobnicate"], "Unknown option --frobnicate"),
])
def test_mistakes_on_the_command_line_are_one_sentence_and_exit_2(argv, sentence, capsys):
    trainer = FakeTrainer()
    assert main(argv, questions.FLOWS, train=trainer, tools={"resize": lambda rest: 0}) == EXIT_USAGE
    error = capsys.readouterr().err
    assert error.startswith(sentence) and error.count("\n") == 1
    assert trainer.configs == []


def test_a_broken_settings_file_is_one_sentence_too(project: Project, capsys):
    broken = project.json_folder / "broken.json"
    broken.write_text("{oops", encoding="utf-8")
    assert main(["--load-json", str(broken), "--no-popups"], questions.FLOWS, train=FakeTrainer()) == EXIT_USAGE
    assert "broken.json" in capsys.readouterr().err


def test_a_tool_gets_the_arguments_after_its_name():
    received: list[list[str]] = []
    tools = {"resize": lambda rest: received.append(rest) or 0}
    assert main(["--tool", "resize", "--rank", "8"], questions.FLOWS, tools=tools) == 0
    assert received == [["--rank", "8"]]


def test_demo_calls_the_demo_with_its_family_and_folder(capsys):
    calls: list[tuple[str | None, str]] = []
    demo = lambda folder, family="sd15": calls.append((folder, family)) or Result(True)
    for argv in (["--demo"], ["--demo", "here"], ["--demo", "sdxl"], ["--demo", "SDXL", "there"]):
        assert main(argv, questions.FLOWS, demo=demo) == EXIT_OK
    assert calls == [(None, "sd15"), ("here", "sd15"), (None, "sdxl"), ("there", "sdxl")]
    assert main(["--demo", "sdxl", "a", "b"], questions.FLOWS, demo=demo) == EXIT_USAGE
    assert capsys.readouterr().err.startswith("--demo takes a family (sdxl) and one folder")


def start_at_once(config, asker) -> str:
    """A pre-flight report that is accepted at once (the real one reads the dataset; it has its own tests)."""
    return "start"


def test_the_guided_session_trains_what_was_answered(project: Project):
    trainer = FakeTrainer()
    asker = ScriptedAsker({**project.path_answers(), "net_dim": 16})
    assert main([], questions.FLOWS, train=trainer, asker=asker, preflight=start_at_once) == EXIT_OK
    (config,) = trainer.configs
    assert config.get("net_dim") == 16 and asker.asked[:2] == ["what_to_do", "load_json"] and len(asker.summaries) == 1
    assert trainer.run_positions == [None]


def test_save_only_writes_the_json_and_does_not_train(project: Project):
    trainer = FakeTrainer()
    asker = ScriptedAsker({**project.path_answers(), "save_json": True,
                           "save_json_folder": str(project.json_folder), "save_json_name": "queued",
                           "save_json_only": True})
    assert main([], questions.FLOWS, train=trainer, asker=asker, preflight=start_at_once) == EXIT_OK
    assert trainer.configs == []
    (saved,) = project.json_folder.glob("config-*-queued.json")
    content = json.loads(saved.read_text(encoding="utf-8"))
    assert content["img_folder"] == str(project.img_folder) and content["save_json_only"] is True


def test_loading_a_json_in_the_popups_asks_only_what_it_lacks(project: Project):
    path = settings_file(project, net_dim=8)
    trainer = FakeTrainer()
    asker = ScriptedAsker({"load_json": True, "load_json_file": str(path)})
    assert main([], questions.FLOWS, train=trainer, asker=asker, preflight=start_at_once) == EXIT_OK
    assert "base_model" not in asker.asked and "net_dim" not in asker.asked and "realistic" in asker.asked
    assert trainer.configs[0].get("net_dim") == 8


def test_load_json_option_with_popups_skips_the_starter_questions(project: Project):
    path = settings_file(project, net_dim=8)
    trainer = FakeTrainer()
    asker = ScriptedAsker({})
    assert main(["--load-json", str(path)], questions.FLOWS, train=trainer, asker=asker, preflight=start_at_once) == EXIT_OK
    assert "queue" not in asker.asked and "base_model" not in asker.asked and "v2" in asker.asked
    assert "what_to_do" not in asker.asked and "load_json" not in asker.asked


def test_back_from_the_preflight_report_returns_to_the_summary_and_cancel_stops(project: Project):
    decisions = iter(["back", "cancel"])
    shown = []

    def preflight(config, asker) -> str:
        shown.append(len(asker.summaries))
        return next(decisions)

    trainer = FakeTrainer()
    asker = ScriptedAsker(project.path_answers())
    assert main([], questions.FLOWS, train=trainer, asker=asker, preflight=preflight) == EXIT_FAILED
    assert shown == [1, 2] and len(asker.summaries) == 2 and trainer.configs == []


def test_cancel_in_the_summary_does_not_train(project: Project):
    trainer = FakeTrainer()
    asker = ScriptedAsker(project.path_answers(), summary_actions=["cancel"])
    assert main([], questions.FLOWS, train=trainer, asker=asker, preflight=start_at_once) == EXIT_FAILED
    assert trainer.configs == []


def test_a_queue_chosen_in_the_popups_runs_and_reports(project: Project):
    settings_file(project, net_dim=4)
    trainer = FakeTrainer()
    asker = ScriptedAsker({"what_to_do": "Run a queue of saved settings", "queue_folder": str(project.json_folder)})
    assert main([], questions.FLOWS, train=trainer, asker=asker, preflight=start_at_once) == EXIT_OK
    assert len(trainer.configs) == 1 and asker.messages[-1][1] == "Queue finished"
    assert asker.asked == ["what_to_do", "queue_folder"] and trainer.run_positions == [(1, 1)]
    (summary_file,) = project.json_folder.glob("queue-summary-*.txt")
    assert str(summary_file) in asker.messages[-1][2]
