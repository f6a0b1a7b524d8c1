"""The terminal asker, driven through scripted stdin: defaults, Back, parsing, choices, the summary."""

from __future__ import annotations

import io
from pathlib import Path

import questions
from test_graph_fixtures import make_project
from wizard.askers.console import ConsoleAsker
from wizard.config import TrainConfig
from wizard.graph import review, walk
from wizard.question import BACK, CANCEL, Question

TRAIN = questions.FLOWS["train"]


def console(lines: list[str]) -> tuple[ConsoleAsker, io.StringIO]:
    output = io.StringIO()
    return ConsoleAsker(stdin=io.StringIO("".join(line + "\n" for line in lines)), stdout=output), output


def test_each_kind_of_answer_is_parsed():
    asker, output = console(["", "b", "n", "2", "name", "x", "8", "1e-4", "-", "a, b"])
    assert asker.ask(Question("q", "int", "Dim?"), 32, can_go_back=True) == 32
    assert asker.ask(Question("q", "yesno", "Sure?"), True, can_go_back=True) is BACK
    assert asker.ask(Question("q", "yesno", "Sure?"), True, can_go_back=True) is False
    choice = Question("q", "choice", "Which?", choices=("LoRA", "LoCon"))
    assert asker.ask(choice, "LoRA", can_go_back=False) == "LoCon"
    assert asker.ask(Question("q", "text", "Name?"), None, can_go_back=False) == "name"
    assert asker.ask(Question("q", "int", "Dim?"), 32, can_go_back=False, error="Too big.") == 8
    assert asker.ask(Question("q", "float", "Rate?"), 1.0, can_go_back=False) == 1e-4
    assert asker.ask(Question("q", "folder", "Folder?"), "/x", can_go_back=False) is None
    assert asker.ask(Question("q", "list", "Tags?"), [], can_go_back=False) == ["a", "b"]
    assert asker.ask(Question("q", "int", "Dim?"), 32, can_go_back=False) is CANCEL  # end of input
    text = output.getvalue()
    assert "[32]" in text and "2. LoCon" in text and "!! Too big." in text
    assert "'x' is not a whole number" in text


def test_back_on_the_first_question_is_refused_with_a_word():
    asker, output = console(["b", "y"])
    assert asker.ask(Question("q", "yesno", "Sure?"), False, can_go_back=False) is True
    assert "nothing to go back to" in output.getvalue()


def test_a_whole_walk_and_summary_from_stdin(tmp_path: Path):
    project = make_project(tmp_path)
    lines = [str(project.base_model), str(project.img_folder), str(project.output_folder), "mylora",
             "y", "b", "n"]  # SD2? yes, then back from "768?" and answer SD2: no
    lines += [""] * 60  # every other question: its default
    lines += ["e 999", "e net_dim", "16", "s"]
    asker, output = console(lines)
    config = TrainConfig(cuda=False)
    assert walk(TRAIN, config, asker) == "done"
    assert config.get("change_output_name") == "mylora" and config.get("v2") is False
    assert review(TRAIN, config, asker, save_json=lambda config: tmp_path) == "start"
    assert config.get("net_dim") == 16
    assert "Type e and a line number" in output.getvalue()
