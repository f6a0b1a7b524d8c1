"""What every Asker (Tk popups, scripted answers, a terminal) offers the graph walker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from wizard.question import Question


@dataclass(frozen=True)
class SummaryRow:
    field: str  # TrainConfig field name
    label: str  # shown to the user
    value: str  # formatted value
    origin: Literal["asked", "loaded", "default"]
    topic: str = ""  # the group it is shown under (`wizard.summary.TOPICS`)
    changed: bool = False  # answered or loaded, and not the default: shown first in its topic
    path_kind: Literal["file", "folder"] | None = None  # a path setting: a file or folder dropped on its row fills it


SummaryAction = (Literal["start", "save", "cancel"] | tuple[Literal["edit"], str]
                 | tuple[Literal["drop"], str, str])
ReportAction = Literal["start", "back", "cancel"]


class Asker(Protocol):
    def ask(self, question: Question, default: Any, *, can_go_back: bool, error: str | None = None) -> Any:
        """Show `question` with `default` pre-filled; return the answer, BACK or CANCEL.

        `error` is the sentence from the question's validation of the previous answer, shown above the input.
        """

    def summary(self, rows: list[SummaryRow], title: str, *, start_label: str = "Start training") -> SummaryAction:
        """Show every value that will be used; return "start", "save", "cancel", ("edit", field) or ("drop", field,
        path) for a file or folder dropped on a path row. `start_label` names what starts (a side tool's summary
        says e.g. "Start resizing")."""

    def info(self, title: str, message: str) -> None:
        """A message the user acknowledges with OK."""

    def error(self, title: str, message: str) -> None:
        """A problem, in one sentence that says what to do."""

    def confirm(self, title: str, message: str, *, yes: str = "Yes", no: str = "No") -> bool:
        """A yes/no that is not a config question (e.g. "overwrite this file?"); True for `yes`.

        `no` is the safe answer (keep going, keep the file): Enter, Escape and closing the window give it.
        """

    def report(self, title: str, text: str, *, can_start: bool = True) -> ReportAction:
        """A long read-only report (the pre-flight check); return "start", "back" (to the settings) or "cancel".

        Lines of `text` that hold tabs are table rows: the asker lines up their cells (see `line_up_columns`).
        Without `can_start` the report explains why training cannot start, and only Back and Cancel are offered.
        """


def line_up_columns(text: str, gap: int = 2) -> str:
    """Tabbed table rows as space-padded columns, for a fixed-width terminal or a log file.

    Each run of consecutive tabbed lines is one table; cells that start with a digit are right-aligned.
    """
    lines = text.split("\n")
    result: list[str] = []
    start = 0
    while start < len(lines):
        end = start
        while end < len(lines) and "\t" in lines[end]:
            end += 1
        if end == start:
            result.append(lines[start])
            start += 1
            continue
        rows = [line.split("\t") for line in lines[start:end]]
        widths = [max(len(row[column]) for row in rows if column < len(row)) for column in range(max(map(len, rows)))]
        for row in rows:
            cells = [cell.rjust(widths[column]) if cell[:1].isdigit() else cell.ljust(widths[column])
                     for column, cell in enumerate(row)]
            result.append((" " * gap).join(cells).rstrip())
        start = end
    return "\n".join(result)
