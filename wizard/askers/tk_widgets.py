"""The pieces every wizard popup is built from: one modal window, and the readers that turn typed text into answers.

A `Dialog` is a Toplevel of the wizard's single root: question text, help, an optional red error sentence, an input
area and a row of buttons. Its size is computed by Tk from its content (nothing is given a pixel size), so text is
never clipped at any `tk scaling`. Typed answers are checked here, in the dialog: a bad number becomes a sentence in
red and the dialog stays open, instead of a crash or a silent default.
"""

from __future__ import annotations

import math
import os
import tkinter as tk
from tkinter import font as tkfont
from tkinter import ttk
from typing import Any, Callable, Literal

from wizard.question import CANCEL


LEAVE_WITHOUT_TRAINING = ("Leave without training?",
                          "Your answers are not used and, unless you saved them with Save JSON, they are lost.")
ButtonSpecs = list[tuple[str, Callable[[], None] | None]]  # (text, command); a None command greys the button out


class BadAnswer(ValueError):
    """Typed text that cannot be the answer; the message is one sentence shown in the dialog."""


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise BadAnswer(f"“{text.strip()}” is not a whole number: type digits only, like 32.") from None


def parse_float(text: str) -> float:
    cleaned = text.strip()
    if cleaned.count(",") == 1 and "." not in cleaned:  # "0,5" typed on a keyboard with a decimal comma
        cleaned = cleaned.replace(",", ".")
    try:
        value = float(cleaned)
    except ValueError:
        raise BadAnswer(f"“{text.strip()}” is not a number: type it like 0.0001 or 1e-4.") from None
    if not math.isfinite(value):
        raise BadAnswer("Please type an ordinary number, like 0.0001 or 1e-4.")
    return value


def parse_list(text: str) -> list[str]:
    """One item per line; a single line may instead hold comma-separated items."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) == 1:
        lines = [item.strip() for item in lines[0].split(",")]
    return [line for line in lines if line]


def clean_path(text: str) -> str:
    """A typed or pasted path: surrounding quotes (Windows' "Copy as path") removed, ~ expanded."""
    return os.path.expanduser(text.strip().strip('"').strip("'").strip())


def folder_of(path: str) -> str | None:
    """The existing folder a path points into, to open the next file picker there."""
    candidate = path if os.path.isdir(path) else os.path.dirname(path)
    return candidate if candidate and os.path.isdir(candidate) else None


def format_default(value: Any) -> str:
    """How a pre-filled value is shown in an entry; None is an empty entry."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\n".join(str(item) for item in value)
    return str(value)


class Dialog:
    """One modal popup. Build it top to bottom with the add_* methods, then `run()` shows it and returns the answer.

    Escape and the window's close button give `on_close` (CANCEL for questions: keep the default). When leaving
    would lose answers (`confirm_leave`: a title and a sentence), they ask first, and "Keep going" is the default.
    Enter presses the focused button, or `on_enter` when the focus is in an entry; it never leaves by itself.
    """

    def __init__(self, root: tk.Tk, title: str, *, wraplength: int, on_close: Any = CANCEL,
                 confirm_leave: tuple[str, str] | None = None) -> None:
        self.root = root
        self.wraplength = wraplength
        self.result: Any = on_close
        self.on_enter: Callable[[], None] | None = None
        self.window = tk.Toplevel(root)
        self.window.withdraw()  # built hidden, shown once placed
        self.window.title(title)
        self.window.attributes("-topmost", True)
        self.window.protocol("WM_DELETE_WINDOW", lambda: self.leave(on_close, confirm_leave))
        self.window.bind("<Escape>", lambda event: self.leave(on_close, confirm_leave))
        self.window.bind("<Return>", self._enter)
        self.window.bind("<KP_Enter>", self._enter)
        self.pad = tkfont.nametofont("TkDefaultFont", root).metrics("linespace") // 2
        self.body = ttk.Frame(self.window, padding=2 * self.pad)
        self.body.pack(fill="both", expand=True)
        self.body.columnconfigure(0, weight=1)
        self._row = 0
        self._error: ttk.Label | None = None

    def add(self, widget: tk.Widget, *, sticky: str = "w", pady: tuple[int, int] | None = None) -> tk.Widget:
        """Place `widget` (a child of `self.body`) on the next row, half a line below the previous one."""
        widget.grid(row=self._row, column=0, sticky=sticky, pady=pady if pady is not None else (0, self.pad))
        self._row += 1
        return widget

    def add_text(self, text: str, style: str) -> ttk.Label:
        label = ttk.Label(self.body, text=text, style=style, wraplength=self.wraplength, justify="left")
        self.add(label)
        return label

    def add_error_area(self, sentence: str | None) -> None:
        """The red sentence above the input: the graph's validation message, later the dialog's own."""
        self._error = ttk.Label(self.body, style="Error.TLabel", wraplength=self.wraplength, justify="left")
        self.add(self._error)
        self.show_error(sentence)

    def show_error(self, sentence: str | None) -> None:
        assert self._error is not None, "add_error_area() comes before show_error()"
        if sentence:
            self._error.configure(text=sentence)
            self._error.grid()
        else:
            self._error.grid_remove()

    def add_button_row(self, right: ButtonSpecs, left: ButtonSpecs | None = None, *,
                       primary: str | None = None) -> dict[str, ttk.Button]:
        """Buttons along the bottom, `left` and `right` each in reading order; `primary` in the accent colour."""
        row = ttk.Frame(self.body)
        made: dict[str, ttk.Button] = {}
        for text, command in (left or []) + right:  # created in reading order, which is also the Tab order
            made[text] = ttk.Button(row, text=text, command=command or (lambda: None),
                                    style="Accent.TButton" if text == primary else "TButton")
            if command is None:
                made[text].state(["disabled"])
        for text, _ in left or []:
            made[text].pack(side="left", padx=(0, self.pad))
        for text, _ in reversed(right):
            made[text].pack(side="right", padx=(self.pad, 0))
        self.add(row, sticky="ew", pady=(self.pad, 0))
        return made

    def leave(self, value: Any, confirm_leave: tuple[str, str] | None = None) -> None:
        """Close with `value`, after asking when `confirm_leave` says answers would be lost."""
        if confirm_leave is not None:
            focused = self.window.focus_get()
            if not ask_confirm(self.root, *confirm_leave, yes="Leave", no="Keep going"):
                if not self.window.winfo_exists():  # closed from elsewhere meanwhile
                    return
                self.window.focus_force()
                (focused or self.window).focus_set()  # Enter presses what it pressed before
                return
        self.finish(value)

    def finish(self, value: Any) -> None:
        self.result = value
        self.window.destroy()

    def run(self, focus: tk.Widget) -> Any:
        """Show the dialog centred and above everything, give `focus` the keyboard, and wait for an answer."""
        self.window.update_idletasks()
        width, height = self.window.winfo_reqwidth(), self.window.winfo_reqheight()
        x = max(0, (self.window.winfo_screenwidth() - width) // 2)
        y = max(0, (self.window.winfo_screenheight() - height) // 3)
        self.window.geometry(f"+{x}+{y}")
        self.window.deiconify()
        self.window.lift()
        self.window.focus_force()
        focus.focus_set()
        self.root.wait_window(self.window)
        return self.result

    def _enter(self, event: tk.Event) -> str | None:
        focused = self.window.focus_get()
        if isinstance(focused, ttk.Button):
            focused.invoke()
        elif isinstance(focused, tk.Text):
            return None  # Enter makes a new line in a list; OK is a click or Ctrl+Enter
        elif self.on_enter is not None:
            self.on_enter()
        return "break"


MessageKind = Literal["info", "error", "warning", "question"]
QUESTION_FONT = "WizardQuestionFont"  # the bold, larger font of question texts (made by tk_theme.apply_theme)
BOLD_FONT = "WizardBoldFont"  # the body font in bold: headings of the summary and the report
ICON_GLYPHS = {"info": "i", "error": "!", "warning": "!", "question": "?"}


def show_message(root: tk.Tk, title: str, message: str, kind: MessageKind = "info") -> None:
    """A themed message box with one OK button (Enter, Escape and the close button all close it)."""
    dialog = _message_dialog(root, title, message, kind, on_close=None)
    buttons = dialog.add_button_row([("OK", lambda: dialog.finish(None))], primary="OK")
    dialog.run(focus=buttons["OK"])


def ask_confirm(root: tk.Tk, title: str, message: str, *, yes: str = "Yes", no: str = "No",
                kind: MessageKind = "question") -> bool:
    """A themed yes/no whose safe answer `no` is the default: Enter, Escape and the close button give False."""
    dialog = _message_dialog(root, title, message, kind, on_close=False)
    buttons = dialog.add_button_row([(yes, lambda: dialog.finish(True)), (no, lambda: dialog.finish(False))],
                                    primary=no)
    return bool(dialog.run(focus=buttons[no]))


def _message_dialog(root: tk.Tk, title: str, message: str, kind: MessageKind, *, on_close: Any) -> Dialog:
    """A Dialog holding a round icon in the palette's colour beside the message; it holds the pointer and keys."""
    from wizard.askers.tk_theme import palette

    font = tkfont.nametofont("TkDefaultFont", root)
    average_char = font.measure("abcdefghijklmnopqrstuvwxyz") / 26
    dialog = Dialog(root, title, wraplength=int(min(root.winfo_screenwidth() * 0.5, average_char * 56)),
                    on_close=on_close)
    colours = palette(root)
    line = ttk.Frame(dialog.body)
    size = 2 * font.metrics("linespace")
    icon = tk.Canvas(line, width=size, height=size, highlightthickness=0, background=colours.background)
    colour = {"info": colours.accent, "question": colours.accent, "error": colours.error,
              "warning": "#f2b600" if colours.name == "light" else "#fce100"}[kind]
    icon.create_oval(1, 1, size - 1, size - 1, fill=colour, outline=colour)
    glyph_font = QUESTION_FONT if QUESTION_FONT in tkfont.names(root) else "TkHeadingFont"
    icon.create_text(size / 2, size / 2, text=ICON_GLYPHS[kind], font=glyph_font,
                     fill="#ffffff" if colours.name == "light" else colours.background)
    icon.grid(row=0, column=0, sticky="n", padx=(0, 2 * dialog.pad))
    ttk.Label(line, text=message, wraplength=dialog.wraplength, justify="left").grid(row=0, column=1, sticky="w")
    dialog.add(line, sticky="ew")
    dialog.window.bind("<Map>", lambda event: _hold_input(dialog.window), add="+")
    return dialog


def _hold_input(window: tk.Toplevel) -> None:
    """Keep clicks and keys in the message until it is answered (the popup under it must not close first)."""
    try:
        window.grab_set()
    except tk.TclError:
        pass  # not viewable yet, or another application holds the pointer: the message still works
