"""Small builders shared by the question modules: gates, help from the field declarations, text clean-up."""

from __future__ import annotations

from typing import Any, Callable

from wizard.config import FIELD_BY_NAME, TrainConfig
from wizard.question import Question, always

Store = Callable[[Any, TrainConfig], None]


def field_help(name: str) -> str:
    """The declared help of a field: one source of truth for the question, the summary and the README."""
    return FIELD_BY_NAME[name].help


def is_set(name: str) -> Callable[[TrainConfig], bool]:
    """A `when`: the field holds something other than its default."""
    return lambda config: config.get(name) != FIELD_BY_NAME[name].default_for(config.cuda)


def gate(
    id: str,
    text: str,
    help: str,
    fields: tuple[str, ...],
    *,
    when: Callable[[TrainConfig], bool] = always,
    start_with: dict[str, Callable[[TrainConfig], Any]] | None = None,
) -> Question:
    """A yes/no that decides whether the following questions about `fields` are asked.

    The pre-filled answer is yes when any of the fields holds something other than its default (so Back, Edit
    and a loaded JSON show the truth). No puts the fields back to their defaults, which mean "off"; the walker
    then skips the questions that write them. Yes puts in the `start_with` values when the fields are still off,
    so the next question shows a sensible number and Cancel there keeps it.
    """

    def is_on(config: TrainConfig) -> bool:
        return any(is_set(name)(config) for name in fields)

    def store(answer: bool, config: TrainConfig) -> None:
        if not answer:
            for name in fields:
                config.set(name, FIELD_BY_NAME[name].default_for(config.cuda))
        elif not is_on(config):
            for name, value in (start_with or {}).items():
                config.set(name, value(config), origin="default")

    return Question(id=id, kind="yesno", text=text, help=help, when=when, fields=fields, current=is_on,
                    store=store)


def text_or_none(name: str) -> Store:
    """Stores typed text, or None when it is empty (an empty comment or name means "none")."""

    def store(answer: str | None, config: TrainConfig) -> None:
        config.set(name, answer.strip() if answer and answer.strip() else None)

    return store


def comma_joined(name: str) -> Store:
    """Stores a list of numbers typed with spaces or commas as "1,0.5,..." (what the trainer reads); a preset word
    stays as it is and empty text means "not set"."""

    def store(answer: str | None, config: TrainConfig) -> None:
        items = [item for item in (answer or "").replace(" ", ",").split(",") if item]
        config.set(name, ",".join(items) if items else None)

    return store
