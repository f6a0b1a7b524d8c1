"""Every kind of popup, shown with real Tk on a virtual screen and answered with real keys and clicks."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Callable

import pytest

from test_tk_fixtures import OnScreen, ScreenReader, answer_on_screen, title_pattern
from wizard.askers.base import SummaryRow
from wizard.askers.tk_asker import TkAsker, question_title
from wizard.askers.tk_widgets import BadAnswer, clean_path, parse_float, parse_int, parse_list
from wizard.question import BACK, CANCEL, Question
from xvfb import VirtualDisplay, shared_virtual_display, virtual_display  # noqa: F401  (fixtures)

YES_NO = Question("use_reg", "yesno", "Do you use regularization images?", help="They keep the model's style.")
CHOICE = Question("scheduler", "choice", "Which learning rate scheduler?",
                  choices=("cosine", "cosine_with_restarts", "constant", "linear"))
NUMBER = Question("net_dim", "int", "Network dimension?", help="32 is a good start.")
FLOAT = Question("learning_rate", "float", "Learning rate?")
TEXT = Question("output_name", "text", "Name of the LoRA file?")
LIST = Question("keep_tags", "list", "Tags to keep first?")
FILE = Question("base_model", "file", "Which base model?", extensions=("safetensors", "ckpt"))
FOLDER = Question("img_folder", "folder", "Where are your images?")


@pytest.fixture
def asker(virtual_display: VirtualDisplay) -> TkAsker:
    made = TkAsker()
    yield made
    made.close()
    del made
    gc.collect()  # the Tk interpreter is freed here, on its own thread, not later in some driver thread


def ask_on_screen(display: VirtualDisplay, asker: TkAsker, question: Question, default: Any,
                  act: Callable[[VirtualDisplay, str, OnScreen, ScreenReader], None], *,
                  can_go_back: bool = True, error: str | None = None) -> Any:
    """Show `question` and let `act(display, window id, what is shown, reader)` answer it."""
    title = question_title(question)

    def work(reader: ScreenReader) -> None:
        seen = reader.look(title)  # by the id Tk reports: the last dialog with this title may not be gone yet
        act(display, seen.window, seen, reader)

    return answer_on_screen(asker.root, lambda: asker.ask(question, default, can_go_back=can_go_back, error=error),
                            work)


def press(*keys: str) -> Callable[..., None]:
    return lambda display, window, seen, reader: display.key(window, *keys)


def click(text: str) -> Callable[..., None]:
    return lambda display, window, seen, reader: display.click(*seen.buttons[text])


def type_then(text: str, *keys: str) -> Callable[..., None]:
    def act(display: VirtualDisplay, window: str, seen: OnScreen, reader: ScreenReader) -> None:
        display.type(window, text)
        display.key(window, *keys)
    return act


@pytest.mark.parametrize(("default", "act", "expected"), [
    (True, press("Return"), True),  # Enter presses the focused default
    (False, press("Return"), False),
    (False, press("shift+Tab", "Return"), True),  # from No back to Yes
    (True, click("No"), False),
    (False, click("Yes"), True),
    (False, press("y"), True),  # Y and N answer too
    (True, press("n"), False),
    (True, press("Escape"), CANCEL),
    (True, click("< Back"), BACK),
])
def test_yes_no(virtual_display, asker, default, act, expected):
    assert ask_on_screen(virtual_display, asker, YES_NO, default, act) is expected


def test_choice_marks_the_current_one_and_answers_by_key_or_click(virtual_display, asker):
    def look_then_press_down(display, window, seen, reader):
        assert "cosine   (current)" in seen.buttons
        display.key(window, "Down", "Return")  # from the current one to the next

    assert ask_on_screen(virtual_display, asker, CHOICE, "cosine", look_then_press_down) == "cosine_with_restarts"
    assert ask_on_screen(virtual_display, asker, CHOICE, "cosine", click("linear")) == "linear"
    assert ask_on_screen(virtual_display, asker, CHOICE, "constant", press("Home", "Return")) == "cosine"
    assert ask_on_screen(virtual_display, asker, CHOICE, "cosine", press("Escape")) is CANCEL


def test_numbers_are_checked_in_the_dialog(virtual_display, asker):
    def bad_then_good(display, window, seen, reader):
        display.type(window, "thirty-two")
        display.key(window, "Return")
        for _ in range(50):  # the dialog answers the bad text in place
            if "not a whole number" in reader.look(seen.title).error:
                break
        else:
            raise AssertionError("no error sentence was shown for a bad number")
        display.type(window, "64")
        display.key(window, "Return")

    assert ask_on_screen(virtual_display, asker, NUMBER, 32, bad_then_good) == 64
    assert ask_on_screen(virtual_display, asker, NUMBER, 32, press("Return")) == 32
    assert ask_on_screen(virtual_display, asker, NUMBER, 32, press("BackSpace", "Return")) is CANCEL
    assert ask_on_screen(virtual_display, asker, FLOAT, 0.0001, type_then("0,5", "Return")) == 0.5
    assert ask_on_screen(virtual_display, asker, FLOAT, None, type_then("1e-4", "Tab", "Tab", "Tab", "Return")) == 0.0001  # Back, Skip, OK


def test_the_graphs_error_is_shown_in_red_above_the_input(virtual_display, asker):
    def read_error(display, window, seen, reader):
        assert seen.error == "Please type a number from 1 to 1024."
        display.key(window, "Escape")

    ask_on_screen(virtual_display, asker, NUMBER, 0, read_error, error="Please type a number from 1 to 1024.")


def test_back_is_greyed_out_on_the_first_question(virtual_display, asker):
    def try_back(display, window, seen, reader):
        assert "< Back" in seen.disabled
        display.click(*seen.buttons["< Back"])  # nothing happens
        display.click(*seen.buttons["OK"])

    assert ask_on_screen(virtual_display, asker, TEXT, "mychar", try_back, can_go_back=False) == "mychar"
    assert ask_on_screen(virtual_display, asker, TEXT, "mychar", click("< Back")) is BACK


def test_text_and_list(virtual_display, asker):
    assert ask_on_screen(virtual_display, asker, TEXT, "last", type_then("my char v2", "Return")) == "my char v2"

    def two_lines(display, window, seen, reader):
        display.key(window, "ctrl+a", "Delete")
        display.type(window, "red hair")
        display.key(window, "Return")  # a new line, not OK
        display.type(window, "blue eyes")
        display.key(window, "ctrl+Return")

    assert ask_on_screen(virtual_display, asker, LIST, [], two_lines) == ["red hair", "blue eyes"]
    assert ask_on_screen(virtual_display, asker, LIST, ["a", "b"], click("OK")) == ["a", "b"]


def test_file_typed_or_browsed_and_the_picker_remembers_the_folder(virtual_display, asker, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    model = models / "base.safetensors"
    model.write_bytes(b"0")

    typed = ask_on_screen(virtual_display, asker, FILE, None, type_then(f'"{model}"', "Return"))
    assert typed == str(model)  # the quotes of Windows' "Copy as path" are removed

    def browse_and_type_name(display, window, seen, reader):
        display.click(*seen.buttons["Browse..."])
        picker = display.find_window(title_pattern(FILE.text))
        display.type(picker, "base.safetensors")  # the picker opens in the remembered folder
        display.key(picker, "Return")
        display.wait_gone(picker)
        display.key(window, "Return")

    assert ask_on_screen(virtual_display, asker, FILE, None, browse_and_type_name) == str(model)

    def browse_folder_and_accept(display, window, seen, reader):
        display.click(*seen.buttons["Browse..."])
        picker = display.find_window(title_pattern(FOLDER.text))
        display.key(picker, "Return")  # accepts the folder it opened in
        display.wait_gone(picker)
        display.key(window, "Return")

    assert ask_on_screen(virtual_display, asker, FOLDER, None, browse_folder_and_accept) == str(models)


def test_summary_edit_save_start_cancel(virtual_display, asker):
    rows = [SummaryRow("base_model", "Base model", "/m/base.safetensors", "loaded", "Files and folders", True),
            SummaryRow("alpha", "Network alpha", "16", "default", "Network"),
            SummaryRow("net_dim", "Network dim", "32", "asked", "Network", True)]
    title = "Check your settings"

    def on_summary(do: Callable[[VirtualDisplay, str, OnScreen], None]) -> Callable[[ScreenReader], None]:
        def work(reader: ScreenReader) -> None:
            seen = reader.look(title)
            window = seen.window
            assert seen.headings == ["Files and folders", "Network"]
            assert seen.row_order == ["base_model", "net_dim", "alpha"]  # the changed net_dim before the default
            do(virtual_display, window, seen)
        return work

    def double_click_alpha(display, window, seen):
        display.xdotool("mousemove", *map(str, seen.rows["alpha"]), "click", "--repeat", "2", "1")

    def select_then_edit(display, window, seen):
        display.click(*seen.rows["base_model"])
        display.click(*seen.buttons["Edit"])

    show = lambda: asker.summary(rows, title)  # noqa: E731
    assert answer_on_screen(asker.root, show, on_summary(double_click_alpha)) == ("edit", "alpha")
    assert answer_on_screen(asker.root, show, on_summary(select_then_edit)) == ("edit", "base_model")
    assert answer_on_screen(asker.root, show, on_summary(lambda d, w, s: d.click(*s.buttons["Save JSON"]))) == "save"
    assert answer_on_screen(asker.root, show, on_summary(lambda d, w, s: d.key(w, "Return"))) == "start"


def test_messages(virtual_display, asker):
    def answer(title: str, *keys: str) -> Callable[[ScreenReader], None]:
        def work(reader: ScreenReader) -> None:
            window = virtual_display.find_window(title_pattern(title))
            virtual_display.key(window, *keys)
        return work

    confirm = lambda: asker.confirm("Overwrite?", "settings.json exists. Replace it?", yes="Replace",  # noqa: E731
                                    no="Keep it")
    assert answer_on_screen(asker.root, confirm, answer("Overwrite?", "Return")) is False  # the safe one is default
    assert answer_on_screen(asker.root, confirm, answer("Overwrite?", "Escape")) is False
    assert answer_on_screen(asker.root, confirm, answer("Overwrite?", "shift+Tab", "Return")) is True
    assert answer_on_screen(asker.root, lambda: asker.info("Saved", "Saved to x.json."), answer("Saved", "Return")) is None
    error = lambda: asker.error("Could not save", "The folder is read-only: choose another.")  # noqa: E731
    assert answer_on_screen(asker.root, error, answer("Could not save", "Return")) is None


def test_typed_text_readers():
    assert parse_int(" 32 ") == 32
    assert parse_float("0,5") == 0.5 and parse_float("1e-4") == 0.0001
    with pytest.raises(BadAnswer, match="whole number"):
        parse_int("3.5")
    with pytest.raises(BadAnswer, match="ordinary number"):
        parse_float("nan")
    assert parse_list("a, b ,c") == ["a", "b", "c"]
    assert parse_list("red hair, blue eyes\nsmile\n\n") == ["red hair, blue eyes", "smile"]
    assert clean_path(' "C:/x y/m.safetensors" ') == "C:/x y/m.safetensors"
    assert Path(clean_path("~/m")) == Path.home() / "m"
