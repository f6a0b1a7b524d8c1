"""The training queue: every JSON of a folder, one after the other, unattended.

Each file gets a fresh config and its own run; a broken file or a failed run is written down and the queue goes on
(the original tool stopped at the first bad path). Finished files move to `complete/`, failed ones to `failed/`
with the reason beside them, so running the same folder again picks up only what is left.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from sd_scripts.errors import UserFacingError
from wizard.config import TrainConfig
from wizard.formats import seed_json

COMPLETE_FOLDER = "complete"
FAILED_FOLDER = "failed"


class RunResult(Protocol):
    """What `run_one` returns; the trainer's TrainResult has this shape."""

    ok: bool
    message: str


@dataclass(frozen=True)
class QueueEntry:
    name: str  # the JSON's file name as it was in the queue folder
    ok: bool
    reason: str  # why it failed, one or two sentences; "" when it worked
    moved_to: Path


@dataclass
class QueueSummary:
    folder: Path
    entries: list[QueueEntry] = field(default_factory=list)

    @property
    def succeeded(self) -> list[QueueEntry]:
        return [entry for entry in self.entries if entry.ok]

    @property
    def failed(self) -> list[QueueEntry]:
        return [entry for entry in self.entries if not entry.ok]

    def text(self) -> str:
        """The report shown at the end: counts, then one line per file."""
        if not self.entries:
            return f"The queue folder {self.folder} has no .json files to run."
        lines = [f"Queue finished: {len(self.succeeded)} of {len(self.entries)} trainings worked, "
                 f"{len(self.failed)} failed."]
        for entry in self.entries:
            if entry.ok:
                lines.append(f"  ok      {entry.name}")
            else:
                lines.append(f"  failed  {entry.name}: {entry.reason}")
        if self.failed:
            lines.append(f"The failed files are in {self.folder / FAILED_FOLDER}, each with an .error.txt that says why.")
        return "\n".join(lines)


def queue_files(folder: Path) -> list[Path]:
    """The JSON files the queue will run, in sorted order (the same on every operating system)."""
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() == ".json")


def load_settings(path: Path) -> TrainConfig:
    """One queue file as a fresh config: our settings JSON (or the seed tool's, or a Kohya_ss GUI file)."""
    config, _warnings = seed_json.load(path)
    return config


def run_queue(
    folder: str | os.PathLike[str],
    run_one: Callable[[TrainConfig], RunResult],
    *,
    load: Callable[[Path], TrainConfig] = load_settings,
    report: Callable[[str], None] = print,
) -> QueueSummary:
    """Run every *.json of `folder` through `load` (our settings JSON by default) and `run_one`.

    Never stops early for a broken file or a failed run; `report` gets one line per file as the queue goes on.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserFacingError(f"The queue folder {folder} does not exist; choose the folder that holds your JSON files.")
    summary = QueueSummary(folder)
    files = queue_files(folder)
    for number, path in enumerate(files, start=1):
        report(f"[{number}/{len(files)}] {path.name}: starting.")
        reason = _run_isolated(path, run_one, load)
        if reason is None:
            moved_to = _move_into(path, folder / COMPLETE_FOLDER)
            report(f"[{number}/{len(files)}] {path.name}: done.")
        else:
            moved_to = _move_into(path, folder / FAILED_FOLDER)
            _write_atomically(moved_to.with_name(moved_to.stem + ".error.txt"), reason + "\n")
            report(f"[{number}/{len(files)}] {path.name}: failed: {reason}")
        summary.entries.append(QueueEntry(path.name, reason is None, reason or "", moved_to))
    report(summary.text())
    return summary


def _run_isolated(path: Path, run_one: Callable[[TrainConfig], RunResult],
                  load: Callable[[Path], TrainConfig]) -> str | None:
    """Load and run one file; the reason it failed, or None when it worked."""
    try:
        result = run_one(load(path))
    except UserFacingError as problem:
        return str(problem)
    except Exception as problem:  # one broken run must not end the queue; the reason is kept beside the file
        return f"Unexpected error ({type(problem).__name__}: {problem}); this is a bug, please report it."
    if not result.ok:
        return result.message or "The training failed without a message."
    return None


def _move_into(path: Path, target_folder: Path) -> Path:
    """Move `path` into `target_folder`, adding -2, -3, ... to the name rather than replacing a file there."""
    target_folder.mkdir(exist_ok=True)
    target = target_folder / path.name
    counter = 2
    while target.exists() or target.with_name(target.stem + ".error.txt").exists():
        target = target_folder / f"{path.stem}-{counter}{path.suffix}"
        counter += 1
    os.replace(path, target)
    return target


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
