"""The popup for a long report (the pre-flight check): readable text in the normal font, scrolled when long.

The report's text comes as plain text with two conventions: the first line of every paragraph is its heading
(shown bold), and lines holding tabs are table rows, whose cells are lined up here with tab stops measured in the
font itself, numbers right-aligned, so the tables read well without a monospace font. Lines starting with "- " wrap
under their own text. The window sizes itself from its content and the screen, so it fits at any `tk scaling`.
"""

from __future__ import annotations

import tkinter as tk
from tkinter import font as tkfont
from tkinter import ttk

from wizard.askers.base import ReportAction
from wizard.askers.tk_widgets import LEAVE_WITHOUT_TRAINING, Dialog

SCREEN_SHARE_HIGH = 0.6  # the text area takes at most this share of the screen's height before it scrolls
TEXT_WIDTH_CHARS = 90  # of the average character; wider tables widen the window, up to the screen's width
COLUMN_GAP_CHARS = 3
BULLET = "- "


def show_report(root: tk.Tk, title: str, text: str, *, can_start: bool = True) -> ReportAction:
    """Show `text` in a modal window of `root`; Start (Enter) / Back / Cancel. Returns the choice.

    Cancel, Escape and the close button ask before leaving (the answers would be lost), "Keep going" the default."""
    font = tkfont.nametofont("TkDefaultFont", root)
    heading_font = font.copy()
    heading_font.configure(weight="bold")
    average_char = font.measure("abcdefghijklmnopqrstuvwxyz") / 26
    dialog = Dialog(root, title, wraplength=int(average_char * TEXT_WIDTH_CHARS), on_close="cancel",
                    confirm_leave=LEAVE_WITHOUT_TRAINING)

    holder = ttk.Frame(dialog.body)
    holder.columnconfigure(0, weight=1)
    holder.rowconfigure(0, weight=1)
    background = ttk.Style(root).lookup("TFrame", "background") or "white"
    area = tk.Text(holder, wrap="word", font=font, relief="flat", borderwidth=0, highlightthickness=0,
                   background=background, padx=dialog.pad, pady=dialog.pad // 2, takefocus=0, cursor="arrow")
    scroll = ttk.Scrollbar(holder, orient="vertical", command=area.yview)
    area.configure(yscrollcommand=scroll.set)
    widest = _fill(area, text, font, heading_font, gap=int(average_char * COLUMN_GAP_CHARS))
    area.configure(state="disabled")
    width_px = min(max(dialog.wraplength, widest + 3 * dialog.pad), int(root.winfo_screenwidth() * 0.9))
    area.configure(width=max(20, int(width_px / font.measure("0"))))
    area.grid(row=0, column=0, sticky="nsew")
    scroll.grid(row=0, column=1, sticky="ns")
    dialog.body.rowconfigure(0, weight=1)
    dialog.add(holder, sticky="nsew")
    _fit_height(area, text, root, font, width_px)

    start = [("Start", lambda: dialog.finish("start"))] if can_start else []
    buttons = dialog.add_button_row(start, left=[("Back", lambda: dialog.finish("back")),
                                                 ("Cancel", lambda: dialog.leave("cancel", LEAVE_WITHOUT_TRAINING))],
                                    primary="Start" if can_start else "Back")
    focus = buttons["Start"] if can_start else buttons["Back"]
    return dialog.run(focus=focus)


def _fill(area: tk.Text, text: str, font: tkfont.Font, heading_font: tkfont.Font, *, gap: int) -> int:
    """Insert the text with its headings, bullets and tables; returns the widest table row in pixels."""
    area.tag_configure("heading", font=heading_font, spacing1=font.metrics("linespace") // 3)
    area.tag_configure("bullet", lmargin2=font.measure(BULLET))
    widest = 0
    lines = text.split("\n")
    index = 0
    table_number = 0
    while index < len(lines):
        line = lines[index]
        starts_paragraph = index == 0 or not lines[index - 1].strip()
        if "\t" in line:
            end = index
            while end < len(lines) and "\t" in lines[end]:
                end += 1
            tag = f"table{table_number}"
            table_number += 1
            widest = max(widest, _add_table(area, lines[index:end], tag, font, gap))
            index = end
            continue
        if starts_paragraph and line.strip():
            area.insert("end", line + "\n", "heading")
        elif line.startswith(BULLET):
            area.insert("end", line + "\n", "bullet")
        else:
            area.insert("end", line + "\n")
        index += 1
    area.delete("end-1c", "end")  # the last line's newline
    return widest


def _add_table(area: tk.Text, rows: list[str], tag: str, font: tkfont.Font, gap: int) -> int:
    """Rows of tab-separated cells under one set of tab stops; columns of numbers are right-aligned."""
    cells = [row.split("\t") for row in rows]
    columns = max(len(row) for row in cells)
    widths = [max(font.measure(row[column]) for row in cells if column < len(row)) for column in range(columns)]
    numeric = [all(row[column][:1].isdigit() for row in cells[1:] if column < len(row) and row[column])
               and len(cells) > 1 for column in range(columns)]
    stops: list[str | int] = []
    x = widths[0] + gap
    for column in range(1, columns):
        if numeric[column]:
            stops += [x + widths[column], "right"]
        else:
            stops += [x, "left"]
        x += widths[column] + gap
    area.tag_configure(tag, tabs=stops or "")
    area.tag_configure("header_row", underline=True)
    area.insert("end", rows[0] + "\n", (tag, "header_row"))
    for row in rows[1:]:
        area.insert("end", row + "\n", tag)
    return x


def _fit_height(area: tk.Text, text: str, root: tk.Tk, font: tkfont.Font, width_px: int) -> None:
    """As many lines as the text takes once wrapped at `width_px`, up to a share of the screen (then it scrolls)."""
    wrapped = sum(max(1, -(-font.measure(line) // width_px)) for line in text.split("\n"))
    most = int(root.winfo_screenheight() * SCREEN_SHARE_HIGH / font.metrics("linespace"))
    area.configure(height=max(5, min(wrapped + 1, most)))
