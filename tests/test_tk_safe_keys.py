"""Safe keys on the real popups: Enter never quits or throws answers away, and leaving asks first only when answers
would be lost, with "Keep going" as the default button.

The questions are the wizard's own (the base model is required, the LoRA name is not), walked by the real walker
with the real Tk asker on a virtual screen; keys are pressed with xdotool, and the window manager's close request is
sent as an X message (Xvfb has no window manager to click).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest

import questions
from test_tk_fixtures import OnScreen, ScreenReader, answer_on_screen
from wizard.askers.base import SummaryRow
from wizard.askers.tk_asker import TkAsker, question_title
from wizard.askers.tk_report import show_report
from wizard.config import TrainConfig
from wizard.graph import walk
from xvfb import VirtualDisplay, shared_virtual_display, virtual_display  # noqa: F401  (fixtures)

TRAIN = {question.id: question for question in questions.FLOWS["train"]}
BASE_MODEL = TRAIN["base_model"]
OUTPUT_NAME = TRAIN["output_name"]
NEEDED = "Choose the base model to go on."  # the sentence of the base model's own check (questions/checks.py)
STOP_TITLE = "Stop the wizard?"
LEAVE_TITLE = "Leave without training?"


MOST_POPUPS = 8  # a walk that asks more than this is re-asking in a loop: the test fails instead of hanging


@pytest.fixture
def asker(virtual_display: VirtualDisplay, monkeypatch: pytest.MonkeyPatch) -> TkAsker:
    made = TkAsker(theme="light")
    shown = []
    for name in ("ask", "confirm"):
        def limited(*arguments, _real=getattr(made, name), **keywords):
            shown.append(arguments[0])
            if len(shown) > MOST_POPUPS:
                raise AssertionError(f"too many popups, the walk loops: {shown}")
            return _real(*arguments, **keywords)
        monkeypatch.setattr(made, name, limited)
    yield made
    made.close()
    del made
    gc.collect()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "base.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"0")
    return path


def next_window(reader: ScreenReader, title: str, after: OnScreen | None = None, *,
                focused: bool = False) -> OnScreen:
    """The window titled `title` once it is a new one (not `after`, which is closing), and when `focused` once a
    button of it has the keyboard (X gives it a moment after the window shows)."""
    for _ in range(200):
        seen = reader.look(title)
        if (after is None or seen.window != after.window) and (seen.focused or not focused):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"{title!r} did not come back")


def test_enter_on_an_empty_required_path_says_what_is_needed_and_asks_again(virtual_display, asker, model):
    config = TrainConfig(cuda=False)

    def work(reader: ScreenReader) -> None:
        first = reader.look(question_title(BASE_MODEL))
        assert first.error == ""
        virtual_display.key(first.window, "Return")  # the entry is empty: there is no default to keep
        again = next_window(reader, question_title(BASE_MODEL), after=first)  # a question to stop would block here
        assert again.error == NEEDED  # what is needed, in the same popup
        virtual_display.type(again.window, str(model))
        virtual_display.key(again.window, "Return")

    outcome = answer_on_screen(asker.root, lambda: walk([BASE_MODEL], config, asker), work)
    assert outcome == "done" and config.get("base_model") == str(model)


def test_escape_on_a_required_path_asks_with_keep_going_as_default_and_keeps_the_answers(virtual_display, asker,
                                                                                          model):
    config = TrainConfig(cuda=False)

    def work(reader: ScreenReader) -> None:
        name = reader.look(question_title(OUTPUT_NAME))
        virtual_display.type(name.window, "mychar_v2")
        virtual_display.key(name.window, "Return")
        first = reader.look(question_title(BASE_MODEL))
        virtual_display.key(first.window, "Escape")
        confirm = next_window(reader, STOP_TITLE, focused=True)
        assert confirm.focused == "Keep going" and set(confirm.buttons) == {"Stop the wizard", "Keep going"}
        virtual_display.key(confirm.window, "Return")  # Enter keeps going
        again = next_window(reader, question_title(BASE_MODEL), after=first)
        assert again.error == NEEDED
        virtual_display.close(again.window)  # the close button: the same question about stopping
        confirm = next_window(reader, STOP_TITLE, after=confirm, focused=True)
        assert confirm.focused == "Keep going"
        virtual_display.close(confirm.window)  # closing the question itself is keeping going too
        last = next_window(reader, question_title(BASE_MODEL), after=again)
        virtual_display.type(last.window, str(model))
        virtual_display.key(last.window, "Return")

    outcome = answer_on_screen(asker.root, lambda: walk([OUTPUT_NAME, BASE_MODEL], config, asker), work)
    assert outcome == "done"
    assert config.get("change_output_name") == "mychar_v2" and config.get("base_model") == str(model)


def test_escape_on_an_optional_question_keeps_its_value_and_asks_nothing(virtual_display, asker):
    config = TrainConfig(cuda=False)
    config.set("change_output_name", "kept")

    def work(reader: ScreenReader) -> None:
        virtual_display.key(reader.look(question_title(OUTPUT_NAME)).window, "Escape")

    assert answer_on_screen(asker.root, lambda: walk([OUTPUT_NAME], config, asker), work) == "done"
    assert config.get("change_output_name") == "kept"


ROWS = [SummaryRow("base_model", "Base model", "/m/base.safetensors", "asked", "Files and folders", True),
        SummaryRow("net_dim", "Network dim", "32", "default", "Network")]


@pytest.mark.parametrize("how", ["Escape", "close button", "Cancel button"])
def test_leaving_the_summary_asks_first_and_keep_going_is_the_default(virtual_display, asker, how):
    def work(reader: ScreenReader) -> None:
        summary = reader.look("Check your settings")
        leave(summary)
        confirm = next_window(reader, LEAVE_TITLE, focused=True)
        assert confirm.focused == "Keep going"
        virtual_display.key(confirm.window, "Return")  # keep going: the summary is still there
        virtual_display.wait_gone(confirm.window)
        assert virtual_display.is_visible(summary.window)
        leave(summary)
        confirm = next_window(reader, LEAVE_TITLE, after=confirm, focused=True)
        virtual_display.click(*confirm.buttons["Leave"])

    def leave(summary: OnScreen) -> None:
        if how == "Escape":
            virtual_display.key(summary.window, "Escape")
        elif how == "close button":
            virtual_display.close(summary.window)
        else:
            virtual_display.click(*summary.buttons["Cancel"])

    assert answer_on_screen(asker.root, lambda: asker.summary(ROWS, "Check your settings"), work) == "cancel"


def test_enter_on_the_summary_starts_and_escape_then_enter_keeps_it_open(virtual_display, asker):
    def work(reader: ScreenReader) -> None:
        summary = reader.look("Check your settings")
        virtual_display.key(summary.window, "Escape")
        confirm = next_window(reader, LEAVE_TITLE, focused=True)
        virtual_display.key(confirm.window, "Return")
        virtual_display.wait_gone(confirm.window)
        virtual_display.key(summary.window, "Return")  # Start training, the summary's default

    assert answer_on_screen(asker.root, lambda: asker.summary(ROWS, "Check your settings"), work) == "start"


def test_leaving_the_preflight_report_asks_first(virtual_display, asker):
    def work(reader: ScreenReader) -> None:
        report = reader.look("Before training starts")
        virtual_display.key(report.window, "Escape")
        confirm = next_window(reader, LEAVE_TITLE, focused=True)
        assert confirm.focused == "Keep going"
        virtual_display.key(confirm.window, "Escape")  # Escape on the question keeps going too
        virtual_display.wait_gone(confirm.window)
        virtual_display.close(report.window)
        confirm = next_window(reader, LEAVE_TITLE, after=confirm, focused=True)
        virtual_display.click(*confirm.buttons["Leave"])

    show = lambda: show_report(asker.root, "Before training starts", "Images\nAll fine.")  # noqa: E731
    assert answer_on_screen(asker.root, show, work) == "cancel"
