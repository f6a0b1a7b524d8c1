"""Builders the side tools' question modules share: a field, the question that asks it, and the output questions.

A tool's settings are declared like the training settings (`wizard.config.Field`: type, default, range, help), and
each question is built from its field by the walker's own `question_for_field`, with the tool's wording.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from wizard.config import Field
from wizard.graph import question_for_field
from wizard.question import Question

SAVE_PRECISIONS = ("float", "fp16", "bf16")
DEVICES = ("cpu", "cuda")


def field(name: str, type_: type, default: Any, label: str, help: str, **more: Any) -> Field:
    return Field(name=name, type=type_, default=default, help=help, group="tool", label=label, **more)


def ask(declared: Field, text: str, *, required: bool = False, **more: Any) -> Question:
    """The question for `declared`, in the tool's words (`more`: when, validate, ...). A `required` path must be
    chosen (its field stays nullable, so Back can return it to "not chosen yet")."""
    question = replace(question_for_field(declared), text=text, **more)
    if required:
        question = replace(question, validate=_chosen(declared.label, question.validate))
    return question


def output_fields(default_name_help: str, precisions: tuple[str, ...] = SAVE_PRECISIONS,
                  precision: str = "fp16") -> tuple[Field, ...]:
    return (
        field("output_folder", str, None, "Output folder", "Where the new file(s) are written; nothing in it is "
              "ever replaced.", path="folder"),
        field("output_name", str, None, "Output name",
              f"The new file's name without .safetensors. {default_name_help}"),
        field("save_precision", str, precision, "Save precision", "fp16 halves the file size and is what UIs load; "
              "float keeps full precision.", choices=precisions, nullable=False),
    )


def output_questions(fields: dict[str, Field]) -> list[Question]:
    return [
        ask(fields["output_folder"], "Choose the folder to save the result in.", required=True),
        ask(fields["output_name"], "A name for the result? (leave empty for the default)",
            store=_text_or_none("output_name")),
        ask(fields["save_precision"], "Save in which precision?"),
    ]


def output_path(config: Any, default_name: str, suffix: str = "") -> Path:
    """<output folder>/<output name or default><suffix>.safetensors."""
    name = config.get("output_name") or default_name
    return Path(config.get("output_folder")) / f"{name}{suffix}.safetensors"


def by_name(fields: tuple[Field, ...]) -> dict[str, Field]:
    return {declared.name: declared for declared in fields}


def _chosen(label: str, check: Callable[[Any, Any], str | None] | None) -> Callable[[Any, Any], str | None]:
    def validate(answer: Any, config: Any) -> str | None:
        if answer is None:
            return f"Choose the {label.lower()}."
        return check(answer, config) if check is not None else None
    return validate


def _text_or_none(name: str) -> Callable[[Any, Any], None]:
    def store(answer: str | None, config: Any) -> None:
        config.set(name, answer.strip() if answer and answer.strip() else None)
    return store
