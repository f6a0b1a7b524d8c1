"""An Asker for a terminal: the wizard on a machine with no display (a server, a remote shell).

Each question is printed with its help and its default in brackets. An empty line takes the default, "b" goes back,
"-" clears an optional value, end of input (Ctrl+D) is Cancel. The streams are parameters so tests can script stdin.
"""

from __future__ import annotations

import sys
import textwrap
from typing import Any, TextIO

from wizard.askers.base import ReportAction, SummaryAction, SummaryRow, line_up_columns
from wizard.question import BACK, CANCEL, Question
from wizard.summary import format_value

_YES = {"y", "yes", "true", "1"}
_NO = {"n", "no", "false", "0"}


class ConsoleAsker:
    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None, width: int = 100) -> None:
        self._input = stdin if stdin is not None else sys.stdin
        self._output = stdout if stdout is not None else sys.stdout
        self._width = width

    # --- the Asker protocol ---------------------------------------------------------------------------------------

    def ask(self, question: Question, default: Any, *, can_go_back: bool, error: str | None = None) -> Any:
        self._say("")
        if error:
            self._say(f"!! {error}")
        self._say(question.text)
        if question.help:
            self._say(textwrap.indent(textwrap.fill(question.help, self._width - 4), "    "))
        if question.kind == "info":
            self._read("(press Enter) ")
            return None
        for number, choice in enumerate(question.choices, start=1):
            self._say(f"  {number}. {choice}")
        hint = "b = back, " if can_go_back else ""
        prompt = f"[{self._show_default(question, default)}] ({hint}Enter = default) > "
        while True:
            line = self._read(prompt)
            if line is None:
                return CANCEL
            text = line.strip()
            if text == "":
                return default
            if text.lower() == "b":
                if can_go_back:
                    return BACK
                self._say("This is the first question: there is nothing to go back to.")
                continue
            try:
                return self._parse(question, text)
            except ValueError as problem:
                self._say(f"!! {problem}")

    def summary(self, rows: list[SummaryRow], title: str, *, start_label: str = "Start training") -> SummaryAction:
        self._say("")
        self._say(f"=== {title} ===")
        label_width = max((len(row.label) for row in rows), default=0)
        for number, row in enumerate(rows, start=1):
            mark = "" if row.origin == "default" else f"  ({row.origin})"
            self._say(f"{number:>3}. {row.label:<{label_width}}  {row.value}{mark}")
        prompt = f"s = {start_label.lower()}, j = save a JSON, e N = edit line N, c = cancel > "
        while True:
            line = self._read(prompt)
            if line is None:
                return "cancel"
            text = line.strip().lower()
            if text in ("s", "start"):
                return "start"
            if text in ("j", "json", "save"):
                return "save"
            if text in ("c", "cancel", "q", "quit"):
                return "cancel"
            if text.startswith("e"):
                target = text[1:].strip()
                if target.isdigit() and 1 <= int(target) <= len(rows):
                    return ("edit", rows[int(target) - 1].field)
                for row in rows:
                    if target == row.field or target == row.label.lower():
                        return ("edit", row.field)
                self._say(f"!! Type e and a line number from 1 to {len(rows)}, e.g. e 3.")
                continue
            self._say("!! Type s, j, e N or c.")

    def info(self, title: str, message: str) -> None:
        self._say(f"\n{title}: {message}")

    def error(self, title: str, message: str) -> None:
        self._say(f"\n!! {title}: {message}")

    def confirm(self, title: str, message: str, *, yes: str = "Yes", no: str = "No") -> bool:
        self._say(f"\n{title}: {message}")
        while True:
            line = self._read(f"y = {yes.lower()}, n = {no.lower()} > ")
            if line is None:
                return False
            answer = line.strip().lower()
            if answer in _YES:
                return True
            if answer in _NO:
                return False
            self._say("!! Type y or n.")

    def report(self, title: str, text: str, *, can_start: bool = True) -> ReportAction:
        self._say("")
        self._say(f"=== {title} ===")
        self._say(line_up_columns(text))
        choices = {"b": "back", "back": "back", "c": "cancel", "cancel": "cancel", "q": "cancel", "quit": "cancel"}
        prompt = "b = back to the settings, c = cancel > "
        if can_start:
            choices.update({"s": "start", "start": "start"})
            prompt = "s = start training, " + prompt
        while True:
            line = self._read(prompt)
            if line is None:
                return "cancel"
            answer = choices.get(line.strip().lower())
            if answer is not None:
                return answer
            self._say("!! Type " + ("s, b or c." if can_start else "b or c."))

    # --- helpers ----------------------------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        print(text, file=self._output, flush=True)

    def _read(self, prompt: str) -> str | None:
        """One line of input, or None at end of input."""
        self._output.write(prompt)
        self._output.flush()
        line = self._input.readline()
        return None if line == "" else line

    @staticmethod
    def _show_default(question: Question, default: Any) -> str:
        if question.kind == "yesno":
            return "y" if default else "n"
        return format_value(default)

    @staticmethod
    def _parse(question: Question, text: str) -> Any:
        """The typed answer for `text`; ValueError with one sentence when it cannot be read."""
        if text == "-" and question.kind not in ("yesno", "choice"):
            return None
        if question.kind == "yesno":
            if text.lower() in _YES:
                return True
            if text.lower() in _NO:
                return False
            raise ValueError("Type y or n.")
        if question.kind == "choice":
            if text.isdigit() and 1 <= int(text) <= len(question.choices):
                return question.choices[int(text) - 1]
            for choice in question.choices:
                if text.lower() == choice.lower():
                    return choice
            raise ValueError(f"Type a number from 1 to {len(question.choices)} or one of the names shown.")
        if question.kind == "int":
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a whole number; type one such as 4.") from None
        if question.kind == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a number; type one such as 0.0001 or 1e-4.") from None
        if question.kind == "list":
            return [item.strip() for item in text.split(",") if item.strip()]
        return text
