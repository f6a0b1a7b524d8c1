"""The real popups: one hidden, always-on-top Tk root, and one dialog per question on top of it.

The original popup tool lost its windows behind others and out of the taskbar because its message boxes had no
common, top-most parent (reference/original_popups.md 7.2). Here every dialog is a Toplevel of ONE root, marked
top-most, lifted and given the keyboard when shown; each dialog is its own window so it has its own taskbar entry.
Every window wears the Sun Valley theme, light or dark (`tk_theme`), and is sized in points for the real screen.

Safe keys: Escape or closing a question means "keep the value shown", never 0. Enter presses the highlighted button
and never leaves the wizard nor throws answers away: in an empty entry with nothing to keep it answers "nothing",
which the walker checks like any answer, so a required path says what is needed and is asked again. Leaving the
summary or the pre-flight report (Escape, the close button, Cancel) asks first, with "Keep going" as the default.
Y and N answer a yes/no; arrows, Home and End move through choices. A file or folder dropped on a path popup fills
its entry; dropped on the summary row of a path setting, it is checked and kept as if typed. All of it runs on the
main thread.

Window titles are stable ("LoRA Wizard - <question id>", the summary's and messages' titles as given): the tests find
the windows by title.
"""

from __future__ import annotations

import math
import os
import tkinter as tk
from tkinter import filedialog, ttk
from tkinter import font as tkfont
from typing import Any

from wizard.askers.base import ReportAction, SummaryAction, SummaryRow
from wizard.askers.tk_report import show_report
from wizard.askers.tk_theme import ThemeChoice, accept_dropped_paths, has_drag_and_drop, open_root, palette
from wizard.askers.tk_widgets import (
    BOLD_FONT,
    LEAVE_WITHOUT_TRAINING,
    BadAnswer,
    ButtonSpecs,
    Dialog,
    ask_confirm,
    clean_path,
    folder_of,
    format_default,
    parse_float,
    parse_int,
    parse_list,
    show_message,
)
from wizard.question import BACK, CANCEL, Dropped, Question
from wizard.summary import by_topic

APP_TITLE = "LoRA Wizard"
ORIGIN_WORDS = {"asked": "your answer", "loaded": "from JSON", "default": "default"}
LONG_HELP_CHARS = 600  # a help longer than this (about ten lines) is laid out wider
CHOICES_SCREEN_SHARE = 0.35  # the choice buttons of one column take at most this share of the screen's height
TOPIC_ROW = "topic:"  # the summary's topic rows are named "topic:<title>"; they are headings, not settings


def question_title(question: Question) -> str:
    return f"{APP_TITLE} - {question.id}"


class TkAsker:
    """Asks with Tk popups. `scaling` is Tk's pixels per point (1.33 is 96 dpi); None takes the screen's real DPI.
    `theme` is light, dark, or the system's setting."""

    def __init__(self, *, scaling: float | None = None, theme: ThemeChoice = "system") -> None:
        self.root = open_root(theme=theme, scaling=scaling)
        self.root.title(APP_TITLE)
        self.root.attributes("-topmost", True)
        self._last_folder: str | None = None

    def close(self) -> None:
        self.root.destroy()

    # -- the Asker protocol ---------------------------------------------------------------------------------------

    def ask(self, question: Question, default: Any, *, can_go_back: bool, error: str | None = None) -> Any:
        dialog = Dialog(self.root, question_title(question), wraplength=self._wraplength(question.help))
        dialog.add_text(question.text, "Question.TLabel")
        if question.help:
            dialog.add_text(question.help, "Help.TLabel")
        dialog.add_error_area(error)
        back = [("< Back", (lambda: dialog.finish(BACK)) if can_go_back else None)]
        if question.kind == "yesno":
            return self._ask_yes_no(dialog, default, back)
        if question.kind == "choice":
            if question.extensions and has_drag_and_drop(self.root):
                suffixes = ", ".join(f".{extension}" for extension in question.extensions)
                dialog.add_text(f"You can also drop a file ({suffixes}) here from your file manager.", "Hint.TLabel")
                accept_dropped_paths(dialog.window,
                                     lambda paths, *where: dialog.finish(Dropped(os.path.normpath(paths[0]))))
            return self._ask_choice(dialog, question.choices, default, back)
        if question.kind == "list":
            return self._ask_list(dialog, default, back)
        if question.kind == "info":
            buttons = dialog.add_button_row([("OK", lambda: dialog.finish(default))], left=back)
            return dialog.run(focus=buttons["OK"])
        return self._ask_typed(dialog, question, default, back)

    def summary(self, rows: list[SummaryRow], title: str, *, start_label: str = "Start training") -> SummaryAction:
        dialog = Dialog(self.root, title, wraplength=self._wraplength(), on_close="cancel",
                        confirm_leave=LEAVE_WITHOUT_TRAINING)
        drops = has_drag_and_drop(self.root)
        dialog.add_text("These settings will be used; in each topic the ones you changed come first. To change one, "
                        "select it and press Edit (or double-click it)."
                        + (" A file or folder dropped on the row of a path takes its place." if drops else ""),
                        "Help.TLabel")
        table = self._summary_table(dialog, rows)
        if drops:
            path_rows = {row.field: row for row in rows if row.path_kind is not None}
            accept_dropped_paths(dialog.window,
                                 lambda paths, x, y: self._drop_on_row(dialog, table, path_rows, paths[0], x, y))

        def edit_selected() -> None:
            if table.selection() and not table.selection()[0].startswith(TOPIC_ROW):
                dialog.finish(("edit", table.selection()[0]))

        table.bind("<Double-1>", lambda event: edit_selected() if table.identify_row(event.y) else None)
        table.bind("<Return>", lambda event: (edit_selected(), "break")[1])
        buttons = dialog.add_button_row(
            [("Cancel", lambda: dialog.leave("cancel", LEAVE_WITHOUT_TRAINING)),
             (start_label, lambda: dialog.finish("start"))],
            left=[("Edit", edit_selected), ("Save JSON", lambda: dialog.finish("save"))], primary=start_label)
        return dialog.run(focus=buttons[start_label])

    def _drop_on_row(self, dialog: Dialog, table: ttk.Treeview, path_rows: dict[str, SummaryRow], path: str,
                     x_root: int, y_root: int) -> None:
        """A path dropped on the summary: the row under the pointer takes it when it is a path setting."""
        over_table = self.root.winfo_containing(x_root, y_root) is table
        field = table.identify_row(y_root - table.winfo_rooty()) if over_table else ""
        if field in path_rows:
            dialog.finish(("drop", field, os.path.normpath(path)))
            return
        examples = ", ".join(row.label for row in list(path_rows.values())[:3])
        show_message(self.root, "Drop it on a path", f"Drop the file or folder on the row of the setting it is "
                                                     f"for, such as {examples}.", "info")

    def info(self, title: str, message: str) -> None:
        show_message(self.root, title, message, "info")

    def error(self, title: str, message: str) -> None:
        show_message(self.root, title, message, "error")

    def report(self, title: str, text: str, *, can_start: bool = True) -> ReportAction:
        return show_report(self.root, title, text, can_start=can_start)

    def confirm(self, title: str, message: str, *, yes: str = "Yes", no: str = "No") -> bool:
        return ask_confirm(self.root, title, message, yes=yes, no=no)

    # -- one builder per kind of question -------------------------------------------------------------------------

    def _ask_yes_no(self, dialog: Dialog, default: Any, back: ButtonSpecs) -> Any:
        buttons = dialog.add_button_row(
            [("Skip", lambda: dialog.finish(CANCEL)), ("Yes", lambda: dialog.finish(True)),
             ("No", lambda: dialog.finish(False))], left=back)
        chosen = buttons["Yes"] if default else buttons["No"]
        chosen.configure(style="Accent.TButton")
        dialog.window.bind("<Key-y>", lambda event: dialog.finish(True))
        dialog.window.bind("<Key-n>", lambda event: dialog.finish(False))
        return dialog.run(focus=chosen)

    def _ask_choice(self, dialog: Dialog, choices: tuple[str, ...], default: Any, back: ButtonSpecs) -> Any:
        column = ttk.Frame(dialog.body)
        choice_buttons = []
        for choice in choices:
            current = choice == default
            choice_buttons.append(ttk.Button(column, text=f"{choice}   (current)" if current else choice,
                                             command=lambda value=choice: dialog.finish(value),
                                             style="Accent.TButton" if current else "TButton"))
        # A long list goes into side-by-side columns (read down, then across) before it outgrows the screen.
        row_height = max(button.winfo_reqheight() for button in choice_buttons) + dialog.pad // 2
        most_per_column = max(4, int(self.root.winfo_screenheight() * CHOICES_SCREEN_SHARE / row_height))
        per_column = math.ceil(len(choices) / math.ceil(len(choices) / most_per_column))  # balanced columns
        for index, button in enumerate(choice_buttons):
            row, place = index % per_column, index // per_column
            column.columnconfigure(place, weight=1, uniform="choices")
            button.grid(row=row, column=place, sticky="ew", pady=(0, dialog.pad // 2),
                        padx=(dialog.pad // 2 if place else 0, 0))
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
        dialog.add_button_row([("Skip", lambda: dialog.finish(CANCEL)), ("OK", accept)], left=back, primary="OK")
        return dialog.run(focus=text)

    def _ask_typed(self, dialog: Dialog, question: Question, default: Any, back: ButtonSpecs) -> Any:
        """int, float, text, file and folder: one entry; empty means "keep the default", or with no default "nothing"
        (which the walker checks: a required one is asked again with what is needed). A path may be dropped on it."""
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
        if question.kind in ("file", "folder") and has_drag_and_drop(self.root):
            dialog.add_text(f"You can also drop the {question.kind} here from your file manager.", "Hint.TLabel")
            accept_dropped_paths(dialog.window, lambda paths, *where: self._fill(entry, paths[0]))

        def accept() -> None:
            typed = entry.get()
            if not typed.strip():
                dialog.finish(CANCEL if default is not None else None)
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
        dialog.add_button_row([("Skip", lambda: dialog.finish(CANCEL)), ("OK", accept)], left=back, primary="OK")
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
            self._fill(entry, chosen)
        entry.focus_set()

    def _fill(self, entry: ttk.Entry, path: str) -> None:
        """Put a browsed or dropped path in the entry, where OK or Enter takes it."""
        path = os.path.normpath(path)
        entry.delete(0, "end")
        entry.insert(0, path)
        entry.focus_set()
        self._last_folder = folder_of(path) or self._last_folder

    # -- looks ----------------------------------------------------------------------------------------------------

    def _summary_table(self, dialog: Dialog, rows: list[SummaryRow]) -> ttk.Treeview:
        """A scrollable table label | value | origin under topic headings, each column as wide as its text, within
        the screen; the changed settings read in the normal colour, the defaults muted."""
        holder = ttk.Frame(dialog.body)
        holder.columnconfigure(0, weight=1)
        holder.rowconfigure(0, weight=1)
        font = tkfont.nametofont("TkDefaultFont", self.root)
        topics = by_topic(rows)
        row_height = int(ttk.Style(self.root).lookup("Treeview", "rowheight") or font.metrics("linespace") * 1.6)
        shown = len(rows) + len(topics)
        visible_rows = max(5, min(shown, int(self.root.winfo_screenheight() * 0.55 / row_height)))
        table = ttk.Treeview(holder, columns=("label", "value", "origin"), show="headings", height=visible_rows,
                             selectmode="browse")
        scroll = ttk.Scrollbar(holder, orient="vertical", command=table.yview)
        table.configure(yscrollcommand=scroll.set)
        screen = self.root.winfo_screenwidth()
        bold = tkfont.nametofont(BOLD_FONT, self.root)
        columns = {"label": ("Setting", 0.25), "value": ("Value", 0.4), "origin": ("From", 0.15)}
        for column, (heading, share) in columns.items():
            texts = [heading] + [getattr(row, column) if column != "origin" else ORIGIN_WORDS[row.origin]
                                 for row in rows]
            widest = max([font.measure(text) for text in texts]
                         + [bold.measure(topic) for topic, _ in topics if column == "label"])
            width = min(widest + 2 * dialog.pad, int(screen * share))
            table.heading(column, text=heading, anchor="w")
            table.column(column, width=width, minwidth=width // 2, stretch=column == "value", anchor="w")
        for topic, members in topics:
            heading = table.insert("", "end", iid=TOPIC_ROW + topic, values=(topic, "", ""), open=True,
                                   tags=("topic",))
            for row in members:
                table.insert(heading, "end", iid=row.field, values=(row.label, row.value, ORIGIN_WORDS[row.origin]),
                             tags=("changed" if row.changed else "unchanged",))
        colours = palette(self.root)
        table.tag_configure("topic", font=BOLD_FONT, foreground=colours.accent)
        table.tag_configure("unchanged", foreground=colours.muted)
        table.grid(row=0, column=0, sticky="nsew")
        scroll.grid(row=0, column=1, sticky="ns")
        dialog.body.rowconfigure(1, weight=1)
        dialog.add(holder, sticky="nsew")
        return table

    def _wraplength(self, text: str = "") -> int:
        """Help wraps at about 64 characters, or half the screen on a small screen; a very long `text` (a help that
        explains each choice) gets wider lines, up to three quarters of the screen, so the popup stays on it."""
        average_char = tkfont.nametofont("TkDefaultFont", self.root).measure("abcdefghijklmnopqrstuvwxyz") / 26
        if len(text) > LONG_HELP_CHARS:
            return int(min(self.root.winfo_screenwidth() * 0.75, average_char * 110))
        return int(min(self.root.winfo_screenwidth() * 0.5, average_char * 64))
