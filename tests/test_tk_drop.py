"""A folder dropped on a path popup fills it: tkDnD's own XDND handlers are driven as a file manager drives them.

A drop from a file manager reaches tkDnD as three X client messages (XdndEnter, XdndPosition, XdndDrop), after which
tkDnD reads the dropped paths from the XdndSelection as text/uri-list. Here this process plays the file manager: it
owns the XdndSelection with the folder's URI, and calls tkDnD's handlers for those three messages with the
position of the popup's entry, on the real widgets under Xvfb. The rest, the <<Drop>> binding and the answer, is the
wizard's; Enter is pressed with xdotool.
"""

from __future__ import annotations

import gc
import threading
import tkinter as tk
from collections.abc import Callable
from pathlib import Path

import pytest

from test_tk_fixtures import ScreenReader, answer_on_screen
from wizard.askers.base import SummaryRow
from wizard.askers.tk_asker import TkAsker, question_title
from wizard.askers.tk_theme import has_drag_and_drop
from wizard.question import Dropped, Question
from xvfb import VirtualDisplay, shared_virtual_display, virtual_display  # noqa: F401  (fixtures)

FOLDER = Question("img_folder", "folder", "Where are your training images?")
FILE = Question("base_model", "file", "Which base model?", extensions=("safetensors", "ckpt"))


@pytest.fixture
def asker(virtual_display: VirtualDisplay) -> TkAsker:
    made = TkAsker(theme="dark")
    yield made
    made.close()
    del made
    gc.collect()


def entry_centre(popup: tk.Toplevel) -> tuple[int, int]:
    entry = next(widget for widget in all_children(popup) if widget.winfo_class() == "TEntry")
    return entry.winfo_rootx() + entry.winfo_width() // 2, entry.winfo_rooty() + entry.winfo_height() // 2


def drop_when_shown(root: tk.Tk, paths: list[Path], dropped: threading.Event,
                    where: Callable[[tk.Toplevel], tuple[int, int] | None] = entry_centre,
                    read: threading.Event | None = None) -> None:
    """Once the newest popup is mapped (and `read` is set: the test has read it) and `where` finds the spot (the
    middle of its entry), drop `paths` there, as XDND does."""

    def when_mapped() -> None:
        popups = [widget for widget in root.winfo_children() if isinstance(widget, tk.Toplevel)]
        if not popups or not popups[-1].winfo_ismapped() or (read is not None and not read.is_set()):
            root.after(20, when_mapped)
            return
        popup = popups[-1]
        spot = where(popup)
        if spot is None:
            root.after(20, when_mapped)
            return
        x, y = spot
        uris = "\r\n".join(path.as_uri() for path in paths) + "\r\n"
        root.selection_own(selection="XdndSelection")  # the drag source offers the data...
        root.selection_handle(lambda offset, length: uris[int(offset):int(offset) + int(length)],
                              selection="XdndSelection", type="text/uri-list")
        source = root.winfo_id()  # ...and is this application, as a file manager would be another
        call = root.tk.call
        call("tkdnd::xdnd::HandleXdndEnter", str(popup), source, ("text/uri-list",), 0)
        call("tkdnd::xdnd::HandleXdndPosition", str(popup), x, y, 0, source)
        call("tkdnd::xdnd::HandleXdndDrop", 0)
        dropped.set()

    root.after(20, when_mapped)


def all_children(widget: tk.Misc) -> list[tk.Misc]:
    found = []
    for child in widget.winfo_children():
        found += [child] + all_children(child)
    return found


def ask_with_a_drop(display: VirtualDisplay, asker: TkAsker, question: Question, paths: list[Path]) -> object:
    dropped = threading.Event()
    drop_when_shown(asker.root, paths, dropped)

    def press_enter_after_the_drop(reader: ScreenReader) -> None:
        seen = reader.look(question_title(question))
        assert dropped.wait(20), "the drop was not made"
        assert any("drop the" in label for label in seen.labels)  # the popup says a drop is welcome
        display.key(seen.window, "Return")

    return answer_on_screen(asker.root, lambda: asker.ask(question, None, can_go_back=False),
                            press_enter_after_the_drop)


def test_tkdnd_loads_into_the_wizard(virtual_display, asker):
    assert has_drag_and_drop(asker.root)


def test_a_folder_dropped_on_a_folder_popup_is_the_answer(virtual_display, asker, tmp_path):
    folder = tmp_path / "my images" / "lora set"  # spaces: a URI holds them as %20
    folder.mkdir(parents=True)
    assert ask_with_a_drop(virtual_display, asker, FOLDER, [folder]) == str(folder)


def test_of_several_dropped_files_the_first_is_taken(virtual_display, asker, tmp_path):
    models = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    for model in models:
        model.write_bytes(b"0")
    assert ask_with_a_drop(virtual_display, asker, FILE, models) == str(models[0])


SUMMARY_ROWS = [
    SummaryRow("img_folder", "Image folder", "/old/images", "asked", "Files and folders", True, "folder"),
    SummaryRow("output_folder", "Output folder", "/old/out", "asked", "Files and folders", True, "folder"),
    SummaryRow("net_dim", "Network dimension", "8", "default", "Network"),
]


def row_centre(field: str) -> Callable[[tk.Toplevel], tuple[int, int] | None]:
    """The middle of the summary row of `field`, once the table has drawn it."""
    def where(popup: tk.Toplevel) -> tuple[int, int] | None:
        table = next(widget for widget in all_children(popup) if widget.winfo_class() == "Treeview")
        if not table.bbox(field):
            return None
        x, y, width, height = table.bbox(field)
        return table.winfo_rootx() + x + width // 2, table.winfo_rooty() + y + height // 2
    return where


def test_a_folder_dropped_on_a_summary_row_of_a_path_replaces_it(virtual_display, asker, tmp_path):
    folder = tmp_path / "new images"
    folder.mkdir()
    dropped, read = threading.Event(), threading.Event()
    drop_when_shown(asker.root, [folder], dropped, where=row_centre("output_folder"), read=read)

    def check_the_drop_was_made(reader: ScreenReader) -> None:
        seen = reader.look("Check your settings")
        read.set()
        assert any("dropped on the row of a path" in label for label in seen.labels)
        assert dropped.wait(20), "the drop was not made"

    action = answer_on_screen(asker.root, lambda: asker.summary(SUMMARY_ROWS, "Check your settings"),
                              check_the_drop_was_made)
    assert action == ("drop", "output_folder", str(folder))


def test_a_settings_file_dropped_on_a_choice_popup_that_takes_files_is_the_answer(virtual_display, asker, tmp_path):
    settings = tmp_path / "my settings.json"
    settings.write_text("{}", encoding="utf-8")
    first_popup = Question("what_to_do", "choice", "What would you like to do?", choices=("Train", "Demo"),
                           extensions=("json", "toml"))
    dropped, read = threading.Event(), threading.Event()
    drop_when_shown(asker.root, [settings], dropped, read=read,
                    where=lambda popup: (popup.winfo_rootx() + 20, popup.winfo_rooty() + 20))

    def check_the_drop_was_made(reader: ScreenReader) -> None:
        seen = reader.look(question_title(first_popup))
        read.set()
        assert any("drop a file (.json, .toml)" in label for label in seen.labels)
        assert dropped.wait(20), "the drop was not made"

    answer = answer_on_screen(asker.root, lambda: asker.ask(first_popup, "Train", can_go_back=False),
                              check_the_drop_was_made)
    assert answer == Dropped(str(settings))
