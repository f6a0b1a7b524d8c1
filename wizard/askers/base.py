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


SummaryAction = Literal["start", "save", "cancel"] | tuple[Literal["edit"], str]


class Asker(Protocol):
    def ask(self, question: Question, default: Any, *, can_go_back: bool, error: str | None = None) -> Any:
        """Show `question` with `default` pre-filled; return the answer, BACK or CANCEL.

        `error` is the sentence from the question's validation of the previous answer, shown above the input.
        """

    def summary(self, rows: list[SummaryRow], title: str) -> SummaryAction:
        """Show every value that will be used; return "start", "save", "cancel" or ("edit", field)."""

    def info(self, title: str, message: str) -> None:
        """A message the user acknowledges with OK."""

    def error(self, title: str, message: str) -> None:
        """A problem, in one sentence that says what to do."""

    def confirm(self, title: str, message: str) -> bool:
        """A yes/no that is not a config question (e.g. "overwrite this file?")."""
