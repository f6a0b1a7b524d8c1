"""Atomic file writes: a reader (or a crash) never sees half a file, and the result is readable by everyone.

The content goes to a temporary file in the destination's own folder (so the final rename never crosses file
systems), gets mode 0644 (safetensors creates its files 0600), and then replaces the destination in one step.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

OUTPUT_FILE_MODE = 0o644


def write_atomically(path: Path, write: Callable[[Path], None], *, mode: int = OUTPUT_FILE_MODE) -> None:
    """Call `write(temporary_path)`, then move the finished file to `path`; the temporary file never stays behind."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
