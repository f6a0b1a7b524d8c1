"""The training queue: every settings file (JSON or TOML) of a folder, one after the other, unattended, in-process.

Each file gets a fresh config and its own run; a broken file, a failed run or an unexpected error is written down and
the queue goes on (the original tool stopped at the first bad path). Finished files move to `complete/`, failed ones
to `failed/` with the reason beside them, so running the same folder again picks up only what is left. Between runs
the memory a run left behind is released (the trainer does it too; a run may also fail outside the trainer). At the
end a `queue-summary-<time>.txt` in the folder says, for each file, whether it worked, why not, where its LoRA is and
how long it took.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from sd_scripts.errors import UserFacingError
from sd_scripts.train import release_memory
from wizard.config import TrainConfig
from wizard.formats import settings_file
from wizard.formats.files import write_text_atomically

COMPLETE_FOLDER = "complete"
FAILED_FOLDER = "failed"
SUMMARY_PREFIX = "queue-summary-"

QueuePosition = tuple[int, int]  # (this run's number, counted from 1; how many runs the queue has)


class RunResult(Protocol):
    """What `run_one` returns; the trainer's TrainResult has this shape."""

    ok: bool
    message: str
    lora_path: str | None


class RunOne(Protocol):
    """Trains one config; `position` says which run of the queue it is, for the progress display."""

    def __call__(self, config: TrainConfig, *, position: QueuePosition) -> RunResult: ...


@dataclass(frozen=True)
class QueueEntry:
    name: str  # the JSON's file name as it was in the queue folder
    ok: bool
    reason: str  # why it failed, one or two sentences; "" when it worked
    moved_to: Path
    lora_path: str | None = None  # the LoRA the run wrote (a failed run may have saved one before failing)
    seconds: float = 0.0  # how long loading and training took


@dataclass
class QueueSummary:
    folder: Path
    entries: list[QueueEntry] = field(default_factory=list)
    summary_file: Path | None = None  # the queue-summary-<time>.txt written at the end; None for an empty queue

    @property
    def succeeded(self) -> list[QueueEntry]:
        return [entry for entry in self.entries if entry.ok]

    @property
    def failed(self) -> list[QueueEntry]:
        return [entry for entry in self.entries if not entry.ok]

    def text(self) -> str:
        """The report shown at the end and saved in the summary file: counts, then one line per file."""
        if not self.entries:
            return f"The queue folder {self.folder} has no .json files (nor .toml ones) to run."
        lines = [f"Queue finished: {len(self.succeeded)} of {len(self.entries)} trainings worked, "
                 f"{len(self.failed)} failed."]
        for entry in self.entries:
            took = f"({format_duration(entry.seconds)})"
            if entry.ok:
                lines.append(f"  ok      {entry.name} -> {entry.lora_path or 'no LoRA file reported'} {took}")
            else:
                lines.append(f"  failed  {entry.name}: {entry.reason} {took}")
        if self.failed:
            lines.append(f"The failed files are in {self.folder / FAILED_FOLDER}, "
                         f"each with an .error.txt that says why.")
        if self.succeeded:
            lines.append(f"The finished files are in {self.folder / COMPLETE_FOLDER}.")
        return "\n".join(lines)


# The settings files a queue runs: the wizard's (or the seed tool's, or a Kohya_ss GUI) JSON and sd-scripts TOML.
QUEUE_EXTENSIONS = (".json", ".toml")


def queue_files(folder: Path) -> list[Path]:
    """The settings files the queue will run, in sorted order (the same on every operating system)."""
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in QUEUE_EXTENSIONS)


def load_settings(path: Path) -> TrainConfig:
    """One queue file as a fresh config, whichever settings format it holds (`settings_file` tells them apart)."""
    config, _warnings = settings_file.load(path)
    return config


def run_queue(
    folder: str | os.PathLike[str],
    run_one: RunOne,
    *,
    load: Callable[[Path], TrainConfig] = load_settings,
    report: Callable[[str], None] = print,
) -> QueueSummary:
    """Run every settings file of `folder` (.json, .toml) through `load` and `run_one`.

    Never stops early for a broken file or a failed run; `report` gets one line per file as the queue goes on, then
    the summary, which is also written to `queue-summary-<time>.txt` in the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserFacingError(f"The queue folder {folder} does not exist; "
                              f"choose the folder that holds your JSON files.")
    summary = QueueSummary(folder)
    files = queue_files(folder)
    for number, path in enumerate(files, start=1):
        position = f"[{number}/{len(files)}] {path.name}"
        report(f"{position}: starting.")
        started = time.monotonic()
        reason, lora_path = _run_isolated(path, run_one, load, (number, len(files)))
        seconds = time.monotonic() - started
        release_memory()
        if reason is None:
            moved_to = _move_into(path, folder / COMPLETE_FOLDER)
            report(f"{position}: done in {format_duration(seconds)}.")
        else:
            moved_to = _move_into(path, folder / FAILED_FOLDER)
            write_text_atomically(_error_file(moved_to), reason + "\n")
            report(f"{position}: failed: {reason}")
        summary.entries.append(QueueEntry(path.name, reason is None, reason or "", moved_to, lora_path, seconds))
    if summary.entries:
        summary.summary_file = _write_summary(summary)
    report(summary.text())
    return summary


def format_duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 2 h 07 min: as precise as a person reading a queue report wants."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _run_isolated(path: Path, run_one: RunOne, load: Callable[[Path], TrainConfig],
                  position: QueuePosition) -> tuple[str | None, str | None]:
    """Load and run one file: (why it failed or None when it worked, the LoRA it wrote or None)."""
    try:
        result = run_one(load(path), position=position)
    except UserFacingError as problem:
        return str(problem), None
    except Exception as problem:  # one broken run must not end the queue; the reason is kept beside the file
        return f"Unexpected error ({type(problem).__name__}: {problem}); this is a bug, please report it.", None
    if not result.ok:
        return result.message or "The training failed without a message.", result.lora_path
    return None, result.lora_path


def _error_file(moved_json: Path) -> Path:
    return moved_json.with_name(moved_json.stem + ".error.txt")


def _move_into(path: Path, target_folder: Path) -> Path:
    """Move `path` into `target_folder`, adding -2, -3, ... to the name rather than replacing a file there."""
    target_folder.mkdir(exist_ok=True)
    target = target_folder / path.name
    counter = 2
    while target.exists() or _error_file(target).exists():
        target = target_folder / f"{path.stem}-{counter}{path.suffix}"
        counter += 1
    os.replace(path, target)
    return target


def _write_summary(summary: QueueSummary) -> Path:
    """The summary as `queue-summary-<date>-<time>.txt` in the queue folder, under a name no earlier queue used."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, counter = summary.folder / f"{SUMMARY_PREFIX}{stamp}.txt", 2
    while path.exists():
        path = summary.folder / f"{SUMMARY_PREFIX}{stamp}-{counter}.txt"
        counter += 1
    return write_text_atomically(path, f"Queue of {summary.folder}, finished {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                                       f"{summary.text()}\n")
