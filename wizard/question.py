"""A question of the wizard, declared as data.

`questions/` holds lists of these; `wizard.graph` walks them; an Asker shows one at a time. A question names the
config field it fills, when it is asked (a predicate on the config so far) and how to check an answer. Nothing here
touches a toolkit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from wizard.config import TrainConfig

Kind = Literal["yesno", "choice", "file", "folder", "int", "float", "text", "list", "info"]


class _Signal:
    """A non-value answer; compared by identity."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


BACK = _Signal("BACK")  # the user asked for the previous question
CANCEL = _Signal("CANCEL")  # the user closed the dialog / pressed Escape: keep the default, never store 0 for it


@dataclass(frozen=True)
class Dropped:
    """The answer to a choice question when a file of its `extensions` was dropped on the popup instead (the first
    popup takes a settings file this way)."""

    path: str


def always(config: "TrainConfig") -> bool:
    return True


@dataclass(frozen=True)
class Question:
    """One popup.

    id:        stable identifier (used by scripted answers in tests and by the summary's Edit).
    kind:      the widget: yes/no, one of `choices`, a file, a folder, a number, text, a list of text, or an info box.
    text:      what is asked, one short sentence.
    help:      why it matters and what the default does; shown under the question.
    field:     the TrainConfig field the answer is stored in (None for questions that only steer the flow).
    when:      asked only when this returns True for the config so far.
    choices:   for kind "choice"; labels shown as buttons.
    extensions: for kind "file": accepted suffixes without the dot, e.g. ("safetensors", "ckpt"); for kind "choice":
               a file with one of these suffixes may be dropped on the popup instead, answered as `Dropped(path)`.
    validate:  returns one sentence saying what is wrong with an answer, or None when it is fine.
    store:     how an answer is written into the config when it is not a plain `config.set(field, answer)`
               (e.g. "realistic model?" -> clip_skip 1 or 2); receives the answer and the config.
    current:   what to pre-fill from the config when it is not simply the field's value (inverse of `store`).
    text_for:  the text made from the answers so far, where it depends on them (e.g. the model family found).
    """

    id: str
    kind: Kind
    text: str
    help: str = ""
    field: str | None = None
    when: Callable[["TrainConfig"], bool] = always
    choices: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    validate: Callable[[Any, "TrainConfig"], str | None] | None = None
    store: Callable[[Any, "TrainConfig"], None] | None = None
    current: Callable[["TrainConfig"], Any] | None = None
    fields: tuple[str, ...] = ()  # other fields `store` writes, so a loaded JSON can skip it
    text_for: Callable[["TrainConfig"], str] | None = None
