"""`python -m wizard.defaults_table`: the README's table of every setting, generated from the declarations.

The table is never written by hand, so it cannot drift from what the wizard actually uses.
"""

from __future__ import annotations

from typing import Any

from wizard.config import FIELDS, Field


def markdown_table(fields: tuple[Field, ...] = FIELDS) -> str:
    """One Markdown row per field: group, name, default (and the default without CUDA), allowed values, help."""
    lines = ["| group | name | default | allowed values | help |", "| --- | --- | --- | --- | --- |"]
    for field in fields:
        default = _shown(field.default)
        if field.default_for(cuda=False) != field.default:
            default += f" ({_shown(field.default_for(cuda=False))} without CUDA)"
        cells = (field.group, f"`{field.name}`", default, field.expected(), field.help)
        lines.append("| " + " | ".join(_cell(text) for text in cells) + " |")
    return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, dict):
        return ", ".join(f"{key}={item}" for key, item in value.items()) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


if __name__ == "__main__":
    print(markdown_table(), end="")
