"""Atomic file writes: a reader (or a crash) never sees half a file, and the result is readable by everyone.

The content goes to a temporary file in the destination's own folder (so the final rename never crosses file
systems), is flushed to the disk (so a power cut after the rename cannot leave an empty file under the final name),
gets mode 0644 (safetensors creates its files 0600), and then replaces the destination in one step. Temporary names
are `.<final name>.<random>.tmp`: hidden, never mistaken for an output, and found again by `remove_leftovers` when a
killed process left one behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from sd_scripts.errors import UserFacingError

OUTPUT_FILE_MODE = 0o644
TEMPORARY_SUFFIX = ".tmp"


def write_atomically(path: Path, write: Callable[[Path], None], *, mode: int = OUTPUT_FILE_MODE) -> None:
    """Call `write(temporary_path)`, then move the finished file to `path`; the temporary file never stays behind."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=TEMPORARY_SUFFIX)
    os.close(handle)
    try:
        write(Path(temporary))
        flush_to_disk(Path(temporary))
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def temporary_prefix(path: Path) -> str:
    """The start of the temporary name of a write to `path` (files and state folders alike)."""
    return f".{path.name}."


def flush_to_disk(path: Path) -> None:
    """Make the file's content durable before it is renamed into place (a full disk may only show here)."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def remove_leftovers(folder: Path, final_name: re.Pattern[str]) -> list[Path]:
    """Delete the temporary files and folders that interrupted writes of names matching `final_name` left in
    `folder` (a process killed mid-save cannot clean up after itself); returns what was removed."""
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        name = entry.name
        if not (name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)):
            continue
        final, _, _random = name[1:-len(TEMPORARY_SUFFIX)].rpartition(".")
        if final_name.fullmatch(final):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def unwritable_error(path: Path | str, error: OSError) -> UserFacingError:
    """The sentence for a write that failed: a full disk says so, anything else names the system's reason."""
    if is_disk_full(error):
        return UserFacingError(f"The disk is full: {path} could not be written; free some space on it or choose "
                               "another output folder.")
    return UserFacingError(f"{path} could not be written ({error.strerror or error}); check that the folder is "
                           "writable and the disk has free space.")
