"""Reading and writing the small text files of the config formats: atomically, in UTF-8, never over a user's file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sd_scripts.errors import UserFacingError


def write_text_atomically(path: Path, text: str, *, overwrite: bool = False) -> Path:
    """Write `text` to a temporary file beside `path`, then rename it into place.

    A half-written file never appears under the final name. With overwrite=False an existing file is an error
    (callers ask the user first, or pick a new name).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserFacingError(f"{path} already exists; choose another name or folder.")
    if not path.parent.is_dir():
        raise UserFacingError(f"The folder {path.parent} does not exist; choose an existing folder.")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_json_object(path: Path) -> dict[str, Any]:
    """The top-level object of a JSON file, or one sentence saying why it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserFacingError(f"The settings file {path} does not exist; check the path and try again.") from None
    except UnicodeDecodeError:
        raise UserFacingError(f"{path.name} is not a text file; choose a settings .json file.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserFacingError(
            f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); choose a settings "
            "file saved by the wizard or fix that line."
        ) from None
    if not isinstance(data, dict):
        raise UserFacingError(f"{path.name} holds a JSON {type(data).__name__}, not a settings object; choose a "
                              "settings file saved by the wizard.")
    return data
