"""The real popups: one hidden, always-on-top Tk root, and one dialog per question on top of it.

The original popup tool lost its windows behind others and out of the taskbar because its message boxes had no
common, top-most parent (reference/original_popups.md 7.2). Here every dialog is a Toplevel of ONE root, marked
top-most, lifted and given the keyboard when shown; each dialog is its own window so it has its own taskbar entry.
Escape or closing a question means "keep the value shown", never 0. Enter presses the highlighted button; Y and N
answer a yes/no; arrows, Home and End move through choices. All of it runs on the main thread.

Window titles are stable ("LoRA Wizard - <question id>", the summary's and messages' titles as given): the tests find
the windows by title.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tkinter as tk
from tkinter import filedialog, messagebox, ttk
from tkinter import font as tkfont
from typing import Any

from wizard.askers.base import ReportAction, SummaryAction, SummaryRow
from wizard.askers.tk_report import show_report
from wizard.askers.tk_widgets import (
    BadAnswer,
    ButtonSpecs,
    Dialog,
    clean_path,
    folder_of,
    format_default,
    parse_float,
    parse_int,
    parse_list,
)
from wizard.question import BACK, CANCEL, Question

APP_TITLE = "LoRA Wizard"
ORIGIN_WORDS = {"asked": "your answer", "loaded": "from JSON", "default": "default"}
STANDARD_FONTS = ("TkDefaultFont", "TkTextFont", "TkFixedFont", "TkMenuFont", "TkHeadingFont", "TkCaptionFont",
                  "TkSmallCaptionFont", "TkIconFont", "TkTooltipFont")


def question_title(question: Question) -> str:
    return f"{APP_TITLE} - {question.id}"


class TkAsker:
    """Asks with Tk popups. `scaling` is Tk's pixels per point (1.33 is 96 dpi); None keeps what the system says."""

    def __init__(self, *, scaling: float | None = None) -> None:
        if sys.platform == "win32":
            _declare_dpi_aware()
        self.root = tk.Tk(className="LoraWizard")
        self.root.withdraw()
        self.root.title(APP_TITLE)
        self.root.attributes("-topmost", True)
        _use_point_sizes(self.root)
        if scaling is not None:
            self.root.tk.call("tk", "scaling", scaling)
        self._style_widgets()
        self._last_folder: str | None = None

    def close(self) -> None:
        self.root.destroy()

    # -- the Asker protocol ---------------------------------------------------------------------------------------

    def ask(self, question: Question, default: Any, *, can_go_back: bool, error: str | None = None) -> Any:
        dialog = Dialog(self.root, question_title(question), wraplength=self._wraplength())
        dialog.add_text(question.text, "Question.TLabel")
        if question.help:
            dialog.add_text(question.help, "Help.TLabel")
        dialog.add_error_area(error)
        back = [("< Back", (lambda: dialog.finish(BACK)) if can_go_back else None)]
        if question.kind == "yesno":
            return self._ask_yes_no(dialog, default, back)
        if question.kind == "choice":
            return self._ask_choice(dialog, question.choices, default, back)
        if question.kind == "list":
            return self._ask_list(dialog, default, back)
        if question.kind == "info":
            buttons = dialog.add_button_row([("OK", lambda: dialog.finish(default))], left=back)
            return dialog.run(focus=buttons["OK"])
        return self._ask_typed(dialog, question, default, back)

    def summary(self, rows: list[SummaryRow], title: str) -> SummaryAction:
        dialog = Dialog(self.root, title, wraplength=self._wraplength(), on_close="cancel")
        dialog.add_text("These settings will be used. To change one, select it and press Edit (or double-click it).",
                        "Help.TLabel")
        table = self._summary_table(dialog, rows)

        def edit_selected() -> None:
            if table.selection():
                dialog.finish(("edit", table.selection()[0]))

        table.bind("<Double-1>", lambda event: edit_selected() if table.identify_row(event.y) else None)
        table.bind("<Return>", lambda event: (edit_selected(), "break")[1])
        buttons = dialog.add_button_row(
            [("Cancel", lambda: dialog.finish("cancel")), ("Start training", lambda: dialog.finish("start"))],
            left=[("Edit", edit_selected), ("Save JSON", lambda: dialog.finish("save"))])
        buttons["Start training"].configure(default="active")
        return dialog.run(focus=buttons["Start training"])

    def info(self, title: str, message: str) -> None:
        messagebox.showinfo(title, message, parent=self.root)

    def error(self, title: str, message: str) -> None:
        messagebox.showerror(title, message, parent=self.root)

    def report(self, title: str, text: str, *, can_start: bool = True) -> ReportAction:
        return show_report(self.root, title, text, can_start=can_start)

    def confirm(self, title: str, message: str) -> bool:
        return bool(messagebox.askyesno(title, message, parent=self.root))

    # -- one builder per kind of question -------------------------------------------------------------------------

    def _ask_yes_no(self, dialog: Dialog, default: Any, back: ButtonSpecs) -> Any:
        buttons = dialog.add_button_row(
            [("Skip", lambda: dialog.finish(CANCEL)), ("Yes", lambda: dialog.finish(True)),
             ("No", lambda: dialog.finish(False))], left=back)
        chosen = buttons["Yes"] if default else buttons["No"]
        chosen.configure(default="active")
        dialog.window.bind("<Key-y>", lambda event: dialog.finish(True))
        dialog.window.bind("<Key-n>", lambda event: dialog.finish(False))
        return dialog.run(focus=chosen)

    def _ask_choice(self, dialog: Dialog, choices: tuple[str, ...], default: Any, back: ButtonSpecs) -> Any:
        column = ttk.Frame(dialog.body)
        column.columnconfigure(0, weight=1)
        choice_buttons = []
        for index, choice in enumerate(choices):
            current = choice == default
            button = ttk.Button(column, text=f"{choice}   (current)" if current else choice,
                                command=lambda value=choice: dialog.finish(value),
                                default="active" if current else "normal")
            button.grid(row=index, column=0, sticky="ew", pady=(0, dialog.pad // 2))
            choice_buttons.append(button)
        for index, button in enumerate(choice_buttons):
            button.bind("<Down>", lambda event, i=index: choice_buttons[(i + 1) % len(choice_buttons)].focus_set())
            button.bind("<Up>", lambda event, i=index: choice_buttons[i - 1].focus_set())
            button.bind("<Home>", lambda event: choice_buttons[0].focus_set())
            button.bind("<End>", lambda event: choice_buttons[-1].focus_set())
        dialog.add(column, sticky="ew")
        dialog.add_button_row([("Skip", lambda: dialog.finish(CANCEL))], left=back)
        focus = next((b for b, c in zip(choice_buttons, choices) if c == default), choice_buttons[0])
        return dialog.run(focus=focus)

    def _ask_list(self, dialog: Dialog, default: Any, back: ButtonSpecs) -> Any:
        dialog.add_text("One per line (or all on one line, separated by commas).", "Hint.TLabel")
        items = list(default or [])
        text = tk.Text(dialog.body, width=48, height=min(max(len(items) + 1, 4), 10), wrap="none", undo=True,
                       font="TkTextFont")
        text.insert("1.0", format_default(items))
        text.bind("<Tab>", lambda event: (text.tk_focusNext().focus_set(), "break")[1])
        text.bind("<Control-Return>", lambda event: (accept(), "break")[1])
        dialog.add(text, sticky="ew")

        def accept() -> None:
            dialog.finish(parse_list(text.get("1.0", "end")))

        dialog.on_enter = accept
        buttons = dialog.add_button_row([("Skip", lambda: dialog.finish(CANCEL)), ("OK", accept)], left=back)
        buttons["OK"].configure(default="active")
        return dialog.run(focus=text)

    def _ask_typed(self, dialog: Dialog, question: Question, default: Any, back: ButtonSpecs) -> Any:
        """int, float, text, file and folder: one entry; empty means "keep the default"."""
        line = ttk.Frame(dialog.body)
        line.columnconfigure(0, weight=1)
        entry = ttk.Entry(line, width=48 if question.kind in ("file", "folder") else 32, font="TkTextFont")
        entry.insert(0, format_default(default))
        entry.select_range(0, "end")
        entry.icursor("end")
        entry.grid(row=0, column=0, sticky="ew")
        if question.kind in ("file", "folder"):
            browse = ttk.Button(line, text="Browse...", command=lambda: self._browse(dialog, question, entry))
            browse.grid(row=0, column=1, padx=(dialog.pad, 0))
        dialog.add(line, sticky="ew")

        def accept() -> None:
            typed = entry.get()
            if not typed.strip():
                dialog.finish(CANCEL)
                return
            try:
                answer = self._read_typed(question, typed)
            except BadAnswer as problem:
                dialog.show_error(str(problem))
                entry.select_range(0, "end")
                entry.focus_set()
                return
            dialog.finish(answer)

        dialog.on_enter = accept
        buttons = dialog.add_button_row([("Skip", lambda: dialog.finish(CANCEL)), ("OK", accept)], left=back)
        buttons["OK"].configure(default="active")
        return dialog.run(focus=entry)

    def _read_typed(self, question: Question, typed: str) -> Any:
        if question.kind == "int":
            return parse_int(typed)
        if question.kind == "float":
            return parse_float(typed)
        if question.kind in ("file", "folder"):
            path = clean_path(typed)
            self._last_folder = folder_of(path) or self._last_folder
            return path
        return typed.strip()

    def _browse(self, dialog: Dialog, question: Question, entry: ttk.Entry) -> None:
        """The system's file or folder picker, opened where the last answer pointed."""
        start = folder_of(clean_path(entry.get())) or self._last_folder
        if question.kind == "folder":
            chosen = filedialog.askdirectory(parent=dialog.window, title=question.text, initialdir=start)
        else:
            patterns = " ".join(f"*.{extension}" for extension in question.extensions)
            types = [(f"Accepted files ({patterns})", patterns)] if patterns else []
            chosen = filedialog.askopenfilename(parent=dialog.window, title=question.text, initialdir=start,
                                                filetypes=types + [("All files", "*")])
        if chosen:
            chosen = os.path.normpath(chosen)
            entry.delete(0, "end")
            entry.insert(0, chosen)
            self._last_folder = folder_of(chosen)
        entry.focus_set()

    # -- looks ----------------------------------------------------------------------------------------------------

    def _summary_table(self, dialog: Dialog, rows: list[SummaryRow]) -> ttk.Treeview:
        """A scrollable table label | value | origin; each column as wide as its text, within the screen."""
        holder = ttk.Frame(dialog.body)
        holder.columnconfigure(0, weight=1)
        holder.rowconfigure(0, weight=1)
        font = tkfont.nametofont("TkDefaultFont", self.root)
        row_height = int(font.metrics("linespace") * 1.4)
        visible_rows = max(5, min(len(rows), int(self.root.winfo_screenheight() * 0.55 / row_height)))
        table = ttk.Treeview(holder, columns=("label", "value", "origin"), show="headings", height=visible_rows,
                             selectmode="browse")
        scroll = ttk.Scrollbar(holder, orient="vertical", command=table.yview)
        table.configure(yscrollcommand=scroll.set)
        screen = self.root.winfo_screenwidth()
        columns = {"label": ("Setting", 0.25), "value": ("Value", 0.4), "origin": ("From", 0.15)}
        for column, (heading, share) in columns.items():
            texts = [heading] + [getattr(row, column) if column != "origin" else ORIGIN_WORDS[row.origin]
                                 for row in rows]
            width = min(max(font.measure(text) for text in texts) + 2 * dialog.pad, int(screen * share))
            table.heading(column, text=heading, anchor="w")
            table.column(column, width=width, minwidth=width // 2, stretch=column == "value", anchor="w")
        for row in rows:
            table.insert("", "end", iid=row.field, values=(row.label, row.value, ORIGIN_WORDS[row.origin]),
                         tags=(row.origin,))
        table.tag_configure("default", foreground="#555555")
        table.grid(row=0, column=0, sticky="nsew")
        scroll.grid(row=0, column=1, sticky="ns")
        dialog.body.rowconfigure(1, weight=1)
        dialog.add(holder, sticky="nsew")
        return table

    def _wraplength(self) -> int:
        """Long help wraps at about 64 characters, or half the screen on a small screen."""
        average_char = tkfont.nametofont("TkDefaultFont", self.root).measure("abcdefghijklmnopqrstuvwxyz") / 26
        return int(min(self.root.winfo_screenwidth() * 0.5, average_char * 64))

    def _style_widgets(self) -> None:
        style = ttk.Style(self.root)
        if style.theme_use() == "default":  # Tk's plain X11 look; clam is the cleaner built-in one
            style.theme_use("clam")
        default = tkfont.nametofont("TkDefaultFont", self.root)
        question_font = default.copy()
        question_font.configure(weight="bold", size=int(default.cget("size")) + 2)
        self._question_font = question_font  # Tk forgets a named font once Python drops it
        style.configure("Question.TLabel", font=question_font)
        style.configure("Help.TLabel", foreground="#333333")
        style.configure("Hint.TLabel", foreground="#555555")
        style.configure("Error.TLabel", foreground="#b00020")
        style.configure("Treeview", rowheight=int(default.metrics("linespace") * 1.4))


def _use_point_sizes(root: tk.Tk) -> None:
    """Re-declare Tk's standard fonts in points: on X11 they come in pixels, which would ignore `tk scaling`."""
    pixels_per_point = float(root.tk.call("tk", "scaling"))
    for name in STANDARD_FONTS:
        font = tkfont.nametofont(name, root)
        size = int(font.cget("size"))
        if size < 0:
            font.configure(size=max(1, round(-size / pixels_per_point)))


def _declare_dpi_aware() -> None:
    """On Windows, ask for real pixels so Tk sizes fonts for the screen instead of being blurred up by the system."""
    try:
        ctypes.windll.shcore.SetProcessDpiAwareness(1)
    except (AttributeError, OSError):
        pass  # Windows before 8.1 has no per-monitor awareness; Tk then draws at 96 dpi, still readable
