"""Driving the real Tk popups of this process from a second thread, through the X server, as a person would.

The test thread shows a dialog (it blocks in Tk's wait loop); a driver thread finds the window with xdotool, reads
where its buttons are and presses keys or clicks. The driver never calls Tk: it asks the Tk thread for a look at the
widgets through a queue that the Tk thread serves on a timer. A watchdog closes any dialog still open after a
timeout, so a broken test fails instead of hanging.
"""

from __future__ import annotations

import gc
import queue
import re
import threading
import tkinter as tk
from dataclasses import dataclass, field
from typing import Any, Callable

from wizard.progress_window import TITLE_SEPARATOR



@dataclass
class OnScreen:
    """What one mapped window of the app shows."""

    title: str
    path: str  # Tk path of the toplevel
    window: str  # its X window id, for xdotool
    width: int
    height: int
    buttons: dict[str, tuple[int, int]] = field(default_factory=dict)  # text -> centre on the screen
    disabled: set[str] = field(default_factory=set)  # texts of greyed-out buttons
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # summary setting row id -> centre (if shown)
    headings: list[str] = field(default_factory=list)  # the summary's topic rows, top to bottom
    row_order: list[str] = field(default_factory=list)  # every setting row id, top to bottom
    labels: list[str] = field(default_factory=list)  # every label's text, top to bottom
    error: str = ""  # the red sentence, "" when hidden
    focused: str = ""  # the text of the button that has the keyboard ("" when it is not a button)


class ScreenReader:
    """Answers "what does the window titled X show?" on the Tk thread, for a thread that must not touch Tk."""

    def __init__(self, root: tk.Tk) -> None:
        self.root = root
        self._requests: queue.Queue[str] = queue.Queue()
        self._answers: queue.Queue[OnScreen | None] = queue.Queue()
        self._timer = root.after(30, self._serve)

    def look(self, title: str, timeout: float = 10.0) -> OnScreen:
        """The window titled `title` once Tk has mapped it."""
        self._requests.put(title)
        seen = self._answers.get(timeout=timeout)
        assert seen is not None, f"No mapped window titled {title!r}."
        return seen

    def stop(self) -> None:
        self.root.after_cancel(self._timer)

    def _serve(self) -> None:
        pending: list[str] = []
        while not self._requests.empty():
            title = self._requests.get()
            seen = self._find(title)
            if seen is None:
                pending.append(title)  # not mapped yet: answer on a later tick
            else:
                self._answers.put(seen)
        for title in pending:
            self._requests.put(title)
        self._timer = self.root.after(30, self._serve)

    def _find(self, title: str) -> OnScreen | None:
        call = self.root.tk.call
        for path in self.toplevels():
            if _same_window(str(call("wm", "title", path)), title) and call("winfo", "ismapped", path):
                self.root.update_idletasks()
                window = str(int(call("wm", "frame", path), 16))
                seen = OnScreen(title, path, window, call("winfo", "width", path), call("winfo", "height", path))
                self._read(path, seen)
                if seen.row_order and not seen.rows:
                    return None  # mapped, but the summary table has not drawn its rows yet: look again next tick
                focused = str(call("focus", "-displayof", path))
                if focused and call("winfo", "exists", focused) and call("winfo", "class", focused) == "TButton":
                    seen.focused = str(call(focused, "cget", "-text"))
                return seen
        return None

    def toplevels(self, path: str = ".") -> list[str]:
        """Tk paths of every toplevel window under `path`, dialogs of dialogs included."""
        found = []
        for child in self.root.tk.splitlist(self.root.tk.call("winfo", "children", path)):
            if self.root.tk.call("winfo", "toplevel", child) == child:
                found.append(child)
            found.extend(self.toplevels(child))
        return found

    def _read(self, path: str, seen: OnScreen) -> None:
        call = self.root.tk.call
        for child in self.root.tk.splitlist(call("winfo", "children", path)):
            if call("winfo", "toplevel", child) == child:
                continue
            kind = call("winfo", "class", child)
            x, y = call("winfo", "rootx", child), call("winfo", "rooty", child)
            width, height = call("winfo", "width", child), call("winfo", "height", child)
            if kind in ("TButton", "Button"):
                text = str(call(child, "cget", "-text"))
                seen.buttons[text] = (x + width // 2, y + height // 2)
                if kind == "TButton" and call(child, "instate", "disabled"):
                    seen.disabled.add(text)
            elif kind in ("TLabel", "Label") and call("winfo", "ismapped", child):
                text = str(call(child, "cget", "-text"))
                seen.labels.append(text)
                if kind == "TLabel" and str(call(child, "cget", "-style")) == "Error.TLabel":
                    seen.error = text
            elif kind == "Treeview":
                self._read_rows(child, "", x, y, seen)
            self._read(child, seen)


    def _read_rows(self, table: str, parent: str, x: int, y: int, seen: OnScreen) -> None:
        """The setting rows of a summary table, under their topic rows, in the order they are shown."""
        call = self.root.tk.call
        for item in self.root.tk.splitlist(call(table, "children", parent)):
            item = str(item)
            if self.root.tk.splitlist(call(table, "children", item)):
                seen.headings.append(str(self.root.tk.splitlist(call(table, "item", item, "-values"))[0]))
                self._read_rows(table, item, x, y, seen)
                continue
            seen.row_order.append(item)
            box = self.root.tk.splitlist(call(table, "bbox", item))
            if box:
                seen.rows[item] = (x + int(box[0]) + int(box[2]) // 2, y + int(box[1]) + int(box[3]) // 2)


def _same_window(shown: str, title: str) -> bool:
    """The progress window puts how far it is before its name ("45% · 2:10 left · Training x"): it is found by its
    name alone."""
    return shown == title or shown.endswith(TITLE_SEPARATOR + title)


def title_pattern(title: str) -> str:
    return f"^{re.escape(title)}$"


def answer_on_screen(
    root: tk.Tk,
    show: Callable[[], Any],
    act: Callable[[ScreenReader], None],
    timeout: float = 30.0,
) -> Any:
    """Call `show()` (which opens a dialog and returns its answer) while `act` works the screen from a thread."""
    reader = ScreenReader(root)
    failures: list[BaseException] = []

    def drive() -> None:
        try:
            act(reader)
        except BaseException as problem:  # re-raised in the test thread below
            failures.append(problem)

    def close_what_is_left() -> None:
        for path in reader.toplevels():
            root.tk.call("destroy", path)

    watchdog = root.after(int(timeout * 1000), close_what_is_left)
    gc.collect()  # Tk objects must die on the Tk thread: a collection in the driver thread would abort Tcl
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        answer = show()
    finally:
        root.after_cancel(watchdog)
        reader.stop()
    driver.join(timeout)
    if failures:
        raise failures[0]
    return answer
