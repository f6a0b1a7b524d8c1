"""An Asker that answers from a script: the tests drive the whole question graph with it.

Every question not in the script takes its pre-filled default, exactly as a user who only presses OK would. The
asker records what it was asked, in order, so a test can check which branch the graph took.
"""

from __future__ import annotations

from typing import Any

from wizard.askers.base import ReportAction, SummaryAction, SummaryRow
from wizard.question import Question


class ScriptExhausted(AssertionError):
    """The graph rejected an answer and the script has nothing else to offer: a test would otherwise loop forever."""


class ScriptedAsker:
    """Answers questions by id from `answers`.

    answers:          question id -> answer, or a list of answers given one per time the question is asked (after
                      the last one the default is taken). An answer may be BACK or CANCEL. Because a list means
                      "one answer per asking", a question of kind "list" gets its value wrapped: {"tags": [["a", "b"]]}.
    summary_actions:  what to press on each summary, in order; "start" once the list is used up.
    confirms:         answers to yes/no confirmations that are not config questions, in order; no once used up.
    report_actions:   what to press on each report, in order; then "start" (or "cancel" when start is not offered).
    """

    def __init__(
        self,
        answers: dict[str, Any] | None = None,
        summary_actions: list[SummaryAction] | None = None,
        confirms: list[bool] | None = None,
        report_actions: list[ReportAction] | None = None,
    ) -> None:
        self._answers = {qid: list(value) if isinstance(value, list) else [value]
                         for qid, value in (answers or {}).items()}
        self._summary_actions = list(summary_actions or [])
        self._confirms = list(confirms or [])
        self._report_actions = list(report_actions or [])
        self.asked: list[str] = []  # question ids in the order they were shown
        self.defaults: dict[str, Any] = {}  # question id -> the default shown the last time it was asked
        self.texts: dict[str, str] = {}  # question id -> its text the last time it was asked
        self.errors: list[tuple[str, str]] = []  # (question id, validation sentence shown)
        self.summaries: list[list[SummaryRow]] = []  # rows of every summary shown
        self.messages: list[tuple[str, str, str]] = []  # ("info" | "error" | "confirm", title, message)
        self.reports: list[tuple[str, str, bool]] = []  # (title, text, can_start) of every report shown

    def ask(self, question: Question, default: Any, *, can_go_back: bool, error: str | None = None) -> Any:
        self.asked.append(question.id)
        self.defaults[question.id] = default
        self.texts[question.id] = question.text
        pending = self._answers.get(question.id, [])
        if error is not None:
            self.errors.append((question.id, error))
            if not pending:
                raise ScriptExhausted(f"Question {question.id!r} rejected the answer and the script has no other: {error}")
        if pending:
            return pending.pop(0)
        return default

    def summary(self, rows: list[SummaryRow], title: str, *, start_label: str = "Start training") -> SummaryAction:
        self.summaries.append(list(rows))
        if self._summary_actions:
            return self._summary_actions.pop(0)
        return "start"

    def info(self, title: str, message: str) -> None:
        self.messages.append(("info", title, message))

    def error(self, title: str, message: str) -> None:
        self.messages.append(("error", title, message))

    def confirm(self, title: str, message: str, *, yes: str = "Yes", no: str = "No") -> bool:
        self.messages.append(("confirm", title, message))
        return self._confirms.pop(0) if self._confirms else False

    def report(self, title: str, text: str, *, can_start: bool = True) -> ReportAction:
        self.reports.append((title, text, can_start))
        if self._report_actions:
            action = self._report_actions.pop(0)
            if action == "start" and not can_start:
                raise ScriptExhausted(f"The script presses Start on a report that does not offer it: {text}")
            return action
        return "start" if can_start else "cancel"
