"""The walker of the question graph, and the summary loop that follows it.

`walk` asks the questions of one flow in order and writes the answers into one TrainConfig:

- a question is asked only when its `when` holds for the config so far;
- a question whose field(s) all came from a loaded JSON is skipped (`skip_loaded`);
- a gate (a yes/no question with no `field` of its own that lists `fields`) answered no closes the later questions
  that write those fields: its `store` has just cleared them, and asking for a folder the user said they don't want
  would be absurd;
- Back returns to the previous question that was actually asked and restores the config as it was before it;
- an answer that fails validation (the question's own, or the field's type and range) is asked again, with the
  one-sentence reason shown above the input;
- Cancel keeps the value already there; only when that value is not acceptable (a required file not chosen yet)
  does the walker offer to stop the wizard.

`review` shows the summary until the user starts or cancels: Edit re-asks the question(s) of one field and any
question that answer opened, a file or folder dropped on a path row is checked and kept as if typed, Save JSON
writes the settings (asking for a folder when none is set).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from sd_scripts.errors import UserFacingError
from wizard.askers.base import Asker
from wizard.config import FIELD_BY_NAME, ConfigError, Field, TrainConfig
from wizard.question import BACK, CANCEL, Question
from wizard.summary import format_value, summary_rows

WalkOutcome = Literal["done", "cancelled"]
ReviewOutcome = Literal["start", "cancel"]

SUMMARY_TITLE = "Check your settings"


def written_fields(question: Question) -> tuple[str, ...]:
    """Every config field an answer to `question` may change."""
    return ((question.field,) if question.field else ()) + tuple(question.fields)


def walk(
    flow: Sequence[Question],
    config: TrainConfig,
    asker: Asker,
    skip_loaded: bool = True,
    *,
    only: Callable[[Question], bool] | None = None,
) -> WalkOutcome:
    """Ask the questions of `flow` into `config`; "cancelled" when the user chose to stop the wizard.

    `only`, when given, limits the walk to the questions it accepts (the summary's Edit uses it).
    """
    history: list[_Asked] = []
    closed: set[str] = set()
    index = 0
    error: str | None = None
    while index < len(flow):
        question = flow[index]
        if not _should_ask(question, config, closed, skip_loaded, only):
            index += 1
            continue
        before = config.copy()
        closed_before = set(closed)
        default = _default_for(question, config)
        shown = question if question.text_for is None else replace(question, text=question.text_for(config))
        answer = asker.ask(shown, default, can_go_back=bool(history), error=error)
        error = None

        if answer is BACK:
            if history:
                previous = history.pop()
                _restore(config, previous.config)
                closed = previous.closed
                index = previous.index
            continue

        if answer is CANCEL:
            problem = _problem_with(question, default, config)
            if problem is not None:
                if asker.confirm("Stop the wizard?", f"{problem} Stop the wizard without training?",
                                 yes="Stop the wizard", no="Keep going"):
                    return "cancelled"
                error = problem
                continue
        else:
            problem = _answer(question, answer, config)
            if problem is not None:
                error = problem
                continue
        if _is_gate(question) and (default if answer is CANCEL else answer) is False:
            closed = closed | set(question.fields)

        history.append(_Asked(index, before, closed_before))
        index += 1
    return "done"


def review(
    flow: Sequence[Question],
    config: TrainConfig,
    asker: Asker,
    *,
    save_json: Callable[[TrainConfig], Path],
) -> ReviewOutcome:
    """Show the summary until the user presses Start or Cancel.

    `save_json` writes the config into its `save_json_folder` and returns the file written; the summary asks for
    the folder and the format (the wizard's JSON or an sd-scripts TOML) first when no folder is set.
    """
    while True:
        action = asker.summary(summary_rows(config), SUMMARY_TITLE)
        if action == "start":
            return "start"
        if action == "cancel":
            return "cancel"
        if action == "save":
            _save_from_summary(config, asker, save_json)
        elif isinstance(action, tuple) and action[0] == "edit":
            edit_field(flow, config, asker, action[1])
        elif isinstance(action, tuple) and action[0] == "drop":
            fill_dropped_path(flow, config, asker, action[1], action[2])


def edit_field(flow: Sequence[Question], config: TrainConfig, asker: Asker, name: str) -> None:
    """Re-ask the question(s) that write `name`, then any later question the new answer opened up.

    A field no question of the flow writes (a hidden default such as the seed) is asked directly from its
    declaration, so every row of the summary can be edited.
    """
    field = FIELD_BY_NAME[name]
    targets = [question for question in flow if name in written_fields(question)]
    if not targets:
        walk([question_for_field(field)], config, asker, skip_loaded=False)
        return
    if not any(question.when(config) for question in targets):
        asker.info(field.label, f"{field.label} is not used with your other answers, so there is nothing to change "
                                f"here; edit the setting it depends on first.")
        return
    hidden_before = {question.id for question in flow if not question.when(config)}
    walk(flow, config, asker, skip_loaded=False,
         only=lambda question: question in targets or question.id in hidden_before)


def fill_dropped_path(flow: Sequence[Question], config: TrainConfig, asker: Asker, name: str, path: str) -> None:
    """A file or folder dropped on the summary row of `name`: checked as its question checks a typed answer, then
    kept, and any question the new value opens is asked; a path that does not fit gets its sentence and changes
    nothing."""
    field = FIELD_BY_NAME[name]
    targets = [question for question in flow if name in written_fields(question) and question.kind == field.path]
    question = next((question for question in targets if question.when(config)), None)
    if question is None:
        question = question_for_field(field) if not targets else None
    if question is None:
        asker.info(field.label, f"{field.label} is not used with your other answers, so the dropped path was not "
                                f"taken; edit the setting it depends on first.")
        return
    hidden_before = {other.id for other in flow if not other.when(config)}
    problem = _answer(question, path, config)
    if problem is not None:
        asker.error(field.label, problem)
        return
    walk(flow, config, asker, skip_loaded=False, only=lambda other: other.id in hidden_before)


def question_for_field(field: Field) -> Question:
    """A plain question for one field, built from its declaration (label, help, choices, path kind)."""
    text = f"{field.label}?"
    if field.choices is not None:
        labels = tuple(str(choice) for choice in field.choices)
        by_label = dict(zip(labels, field.choices))
        return Question(id=field.name, kind="choice", text=text, help=field.help, field=field.name, choices=labels,
                        current=lambda config: str(config.get(field.name)),
                        store=lambda answer, config: config.set(field.name, by_label[answer]))
    if field.path is not None:
        return Question(id=field.name, kind=field.path, text=text, help=field.help, field=field.name,
                        extensions=field.extensions, validate=_existing_path(field))
    if field.type is dict:
        return Question(id=field.name, kind="text", text=text,
                        help=field.help + " Type name=value pairs separated by spaces.", field=field.name,
                        current=lambda config: format_value(config.get(field.name)),
                        store=lambda answer, config: config.set(field.name, _name_value_pairs(answer)))
    kinds = {bool: "yesno", int: "int", float: "float", str: "text", list: "list"}
    return Question(id=field.name, kind=kinds[field.type], text=text, help=field.help, field=field.name)


# --- helpers ------------------------------------------------------------------------------------------------------


@dataclass
class _Asked:
    """A question that was asked: where it is in the flow and the state before it, for Back."""

    index: int
    config: TrainConfig
    closed: set[str]


def _is_gate(question: Question) -> bool:
    return question.kind == "yesno" and question.field is None and bool(question.fields)


def _should_ask(question: Question, config: TrainConfig, closed: set[str], skip_loaded: bool,
                only: Callable[[Question], bool] | None) -> bool:
    if only is not None and not only(question):
        return False
    fields = written_fields(question)
    if closed & set(fields):
        return False
    if skip_loaded and fields and all(config.origin(name) == "loaded" for name in fields):
        return False
    return question.when(config)


def _default_for(question: Question, config: TrainConfig) -> Any:
    if question.current is not None:
        return question.current(config)
    if question.field is not None:
        return config.get(question.field)
    return None


def _problem_with(question: Question, answer: Any, config: TrainConfig) -> str | None:
    """One sentence saying what is wrong with `answer`, or None."""
    if question.kind == "yesno" and not isinstance(answer, bool):
        return "Answer yes or no."
    if question.kind == "choice" and answer not in question.choices:
        return f"Choose one of: {', '.join(question.choices)}."
    if question.validate is not None:
        return question.validate(answer, config)
    return None


def _answer(question: Question, answer: Any, config: TrainConfig) -> str | None:
    """Check `answer` and store it; the sentence saying what is wrong (and the config untouched) when it does not
    fit the question or its fields."""
    problem = _problem_with(question, answer, config)
    if problem is not None:
        return problem
    before = config.copy()
    try:
        _store(question, answer, config)
    except ConfigError as wrong:
        _restore(config, before)
        return wrong.message
    return None


def _store(question: Question, answer: Any, config: TrainConfig) -> None:
    if question.store is not None:
        question.store(answer, config)
    elif question.field is not None:
        config.set(question.field, answer)


def _restore(config: TrainConfig, snapshot: TrainConfig) -> None:
    for field in config.fields:
        config.set(field.name, snapshot.get(field.name), origin=snapshot.origin(field.name))


def _existing_path(field: Field) -> Callable[[Any, TrainConfig], str | None]:
    def check(answer: Any, config: TrainConfig) -> str | None:
        if answer is None:
            return None if field.nullable else f"Choose the {field.label.lower()}."
        path = Path(answer)
        exists = path.is_file() if field.path == "file" else path.is_dir()
        return None if exists else f"{answer} is not an existing {field.path}; choose one that exists."
    return check


def _name_value_pairs(text: str | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in (text or "").split():
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise ConfigError(f"'{item}' is not a name=value pair; write them like weight_decay=0.1 betas=0.9,0.99.")
        pairs[name] = value
    return pairs


def _save_from_summary(config: TrainConfig, asker: Asker, save_json: Callable[[TrainConfig], Path]) -> None:
    if config.get("save_json_folder") is None:
        where_and_how = [question_for_field(FIELD_BY_NAME[name]) for name in ("save_json_folder", "settings_format")]
        if walk(where_and_how, config, asker, skip_loaded=False) == "cancelled":
            return
        if config.get("save_json_folder") is None:
            return
    try:
        saved = save_json(config)
    except (UserFacingError, OSError) as problem:
        asker.error("Could not save the settings", str(problem))
        return
    asker.info("Settings saved", f"Your settings were saved to {saved}.")
