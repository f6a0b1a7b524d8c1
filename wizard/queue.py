"""The training queue: every settings file (JSON or TOML) of a folder, one after the other, unattended, in-process.

Each file gets a fresh config and its own run; a broken file, a failed run or an unexpected error is written down and
the queue goes on (the original tool stopped at the first bad path). Finished files move to `complete/`, failed ones
to `failed/` with the reason beside them, so running the same folder again picks up only what is left. Between runs
the memory a run left behind is released (the trainer does it too; a run may also fail outside the trainer). At the
end a `queue-summary-<time>.txt` in the folder says, for each file, what became of it, why, where its LoRA is and
how long it took.

Under faults:
- Each file is read when its turn comes: a file edited while the queue runs trains with its new settings, one removed
  is reported and skipped, and one added is run after the others.
- A run the user stops (Stop, or Ctrl+C) stays in the folder, resumable: the queue writes the state folder the stop
  saved into the file as its `resume` setting (the sd-scripts name every settings format here reads), and the queue
  stops there; the next queue start continues that run from its state, then runs what is left.
- One queue per folder: `queue.lock` is created atomically and holds the queue's process id and start time. A second
  queue on the folder refuses with one sentence; the lock of a queue whose process is gone is taken over, with a note.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Protocol

import psutil
import tomli_w

from sd_scripts.errors import UserFacingError
from sd_scripts.train import release_memory
from wizard.config import TrainConfig
from wizard.formats import settings_file
from wizard.formats.files import write_text_atomically

COMPLETE_FOLDER = "complete"
FAILED_FOLDER = "failed"
SUMMARY_PREFIX = "queue-summary-"
LOCK_NAME = "queue.lock"
RESUME_KEY = "resume"  # the setting a stopped run's state folder is written under, in JSON and TOML alike

QueuePosition = tuple[int, int]  # (this run's number, counted from 1; how many runs the queue has)
Outcome = Literal["done", "failed", "stopped", "removed", "not started"]


class RunResult(Protocol):
    """What `run_one` returns; the trainer's TrainResult has this shape."""

    ok: bool
    message: str
    lora_path: str | None
    # A TrainResult also has `resume_state`: the state folder a run the user stopped continues from (else None).


class RunOne(Protocol):
    """Trains one config; `position` says which run of the queue it is, for the progress display."""

    def __call__(self, config: TrainConfig, *, position: QueuePosition) -> RunResult: ...


@dataclass(frozen=True)
class QueueEntry:
    name: str  # the file's name as it was in the queue folder
    outcome: Outcome
    reason: str  # why it failed, was removed or where it resumes; "" when it worked or did not start
    moved_to: Path | None  # complete/ or failed/; the queue folder itself for a stopped run; None when gone
    lora_path: str | None = None  # the LoRA the run wrote (a failed run may have saved one before failing)
    seconds: float = 0.0  # how long loading and training took

    @property
    def ok(self) -> bool:
        return self.outcome == "done"


@dataclass
class QueueSummary:
    folder: Path
    entries: list[QueueEntry] = field(default_factory=list)
    summary_file: Path | None = None  # the queue-summary-<time>.txt written at the end; None for an empty queue

    def of(self, outcome: Outcome) -> list[QueueEntry]:
        return [entry for entry in self.entries if entry.outcome == outcome]

    @property
    def succeeded(self) -> list[QueueEntry]:
        return self.of("done")

    @property
    def failed(self) -> list[QueueEntry]:
        return self.of("failed")

    def text(self) -> str:
        """The report shown at the end and saved in the summary file: counts, then one line per file."""
        if not self.entries:
            return f"The queue folder {self.folder} has no .json files (nor .toml ones) to run."
        stopped = bool(self.of("stopped"))
        counts = [f"{len(self.succeeded)} of {len(self.entries)} trainings worked", f"{len(self.failed)} failed"]
        counts += [f"{len(self.of(outcome))} {outcome}" for outcome in ("stopped", "removed", "not started")
                   if self.of(outcome)]
        lines = [f"Queue {'stopped' if stopped else 'finished'}: {', '.join(counts)}."]
        for entry in self.entries:
            took = f" ({format_duration(entry.seconds)})" if entry.outcome not in ("removed", "not started") else ""
            detail = {"done": f" -> {entry.lora_path or 'no LoRA file reported'}", "not started": ""}.get(
                entry.outcome, f": {entry.reason}")
            lines.append(f"  {'ok' if entry.ok else entry.outcome:<7} {entry.name}{detail}{took}")
        if self.failed:
            lines.append(f"The failed files are in {self.folder / FAILED_FOLDER}, "
                         f"each with an .error.txt that says why.")
        if self.succeeded:
            lines.append(f"The finished files are in {self.folder / COMPLETE_FOLDER}.")
        if stopped:
            lines.append(f"Start the queue on {self.folder} again to continue the stopped training and run the rest.")
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
    """Run every settings file of `folder` (.json, .toml) through `load` and `run_one`, holding the folder's lock.

    Never stops early for a broken file or a failed run, only when the user stops a run; `report` gets one line per
    file as the queue goes on, then the summary, which is also written to `queue-summary-<time>.txt` in the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserFacingError(f"The queue folder {folder} does not exist; "
                              f"choose the folder that holds your JSON files.")
    with QueueLock(folder, report):
        summary = QueueSummary(folder)
        for number, path, count in _turns(folder):
            if summary.of("stopped"):
                summary.entries.append(QueueEntry(path.name, "not started", "", path))
                continue
            position = f"[{number}/{count}] {path.name}"
            if path.exists():
                report(f"{position}: starting.")
            entry = _run_entry(path, run_one, load, (number, count))
            summary.entries.append(entry)
            report(f"{position}: {_progress_line(entry)}")
        if summary.entries:
            summary.summary_file = _write_summary(summary)
    report(summary.text())
    return summary


def _turns(folder: Path) -> Iterator[tuple[int, Path, int]]:
    """(number, file, how many so far) for each file of the folder, sorted; files added meanwhile come after."""
    files = queue_files(folder)
    number = 0
    while number < len(files):
        yield number + 1, files[number], len(files)
        number += 1
        if number == len(files):
            seen = {path.name for path in files}
            files += [path for path in queue_files(folder) if path.name not in seen]


def _run_entry(path: Path, run_one: RunOne, load: Callable[[Path], TrainConfig],
               position: QueuePosition) -> QueueEntry:
    """Load and run one file, then put it where its outcome says; never raises for a broken run."""
    if not path.exists():
        return QueueEntry(path.name, "removed", "it was removed from the queue folder before its turn, so nothing "
                                                "ran.", None)
    started = time.monotonic()
    details = ""
    try:
        result = run_one(load(path), position=position)
        reason = None if result.ok else (result.message or "The training failed without a message.")
        lora_path, resume_state = result.lora_path, getattr(result, "resume_state", None)
    except UserFacingError as problem:
        reason, lora_path, resume_state = str(problem), None, None
    except Exception as problem:  # one broken run must not end the queue; the traceback is kept beside the file
        reason, lora_path, resume_state = f"Unexpected error ({type(problem).__name__}: {problem})", None, None
        details = "".join(traceback.format_exception(problem))
    seconds = time.monotonic() - started
    release_memory()
    if reason is None and resume_state is not None:
        return _keep_resumable(path, resume_state, lora_path, seconds)
    if not path.exists():  # removed while it trained: its outcome is still reported
        outcome: Outcome = "done" if reason is None else "failed"
        return QueueEntry(path.name, outcome, reason or "", None, lora_path, seconds)
    if reason is None:
        return QueueEntry(path.name, "done", "", _move_into(path, path.parent / COMPLETE_FOLDER), lora_path, seconds)
    moved_to = _move_into(path, path.parent / FAILED_FOLDER)
    if details:
        reason += f"; this is a bug, please report it with {_error_file(moved_to)}, which holds the details."
    write_text_atomically(_error_file(moved_to), reason + "\n" + (f"\n{details}" if details else ""))
    return QueueEntry(path.name, "failed", reason, moved_to, lora_path, seconds)


def _keep_resumable(path: Path, resume_state: str, lora_path: str | None, seconds: float) -> QueueEntry:
    """A stopped run: its file stays in the queue folder with the state to continue from as its `resume` setting."""
    if not path.exists():
        return QueueEntry(path.name, "stopped", f"stopped; the file was removed meanwhile, so continue it from "
                                                f"{resume_state} by hand.", None, lora_path, seconds)
    try:
        record_resume_point(path, resume_state)
    except (OSError, ValueError, UserFacingError) as problem:  # edited into a broken file meanwhile, or read-only
        return QueueEntry(path.name, "stopped", f"stopped, but the resume point could not be written into the file "
                                                f"({problem}); set its resume setting to {resume_state} to continue "
                                                "it.", path, lora_path, seconds)
    return QueueEntry(path.name, "stopped", f"stopped; the next queue start continues it from {resume_state}.",
                      path, lora_path, seconds)


def _progress_line(entry: QueueEntry) -> str:
    took = format_duration(entry.seconds)
    return {"done": f"done in {took}.", "failed": f"failed: {entry.reason}", "removed": entry.reason,
            "stopped": f"{entry.reason} The queue stops here."}[entry.outcome]


_TOML_RESUME_LINE = re.compile(rf"^\s*{RESUME_KEY}\s*=")


def record_resume_point(path: Path, state_folder: str) -> None:
    """Set the `resume` setting of a queue file to `state_folder`, rewriting the file atomically.

    A JSON keeps its other keys and their order; a TOML keeps its other lines and comments, and gets the setting as
    its first line (a top-level key must come before any [section]; a `resume` line already there is replaced).
    """
    text = path.read_text(encoding="utf-8-sig")
    if settings_file.detect(path) == "json":
        data = json.loads(text)
        data[RESUME_KEY] = state_folder
        new_text = json.dumps(data, indent=4, ensure_ascii=False) + "\n"
    else:
        kept = [line for line in text.splitlines() if not _TOML_RESUME_LINE.match(line)]
        new_text = tomli_w.dumps({RESUME_KEY: state_folder}) + "\n".join(kept) + "\n"
    write_text_atomically(path, new_text, overwrite=True)


class QueueLock:
    """`queue.lock` in the folder while a queue runs it: created with O_EXCL, so two queues never both hold it."""

    def __init__(self, folder: Path, report: Callable[[str], None]) -> None:
        self.path = folder / LOCK_NAME
        self.report = report
        process = psutil.Process()
        self.text = json.dumps({"pid": process.pid, "started": process.create_time()})

    def __enter__(self) -> QueueLock:
        if self._create():
            return self
        seen = self._holder_text()
        holder = _lock_holder(seen)
        if seen is not None and holder is None:  # a queue between creating the lock and writing it, or a crash there
            raise UserFacingError(f"{self.path} cannot be read, so another queue may be starting on this folder; if "
                                  "none is running, delete that file and start the queue again.")
        if holder is not None and _running(holder):
            raise self._refusal(holder)
        self._take_over(seen, holder)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._holder_text() == self.text:
            self.path.unlink()

    def _create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(self.text)
        return True

    def _holder_text(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def _take_over(self, seen: str | None, holder: dict | None) -> None:
        """Replace the lock `seen` (its queue is gone, or it vanished meanwhile) with ours; a queue that took it over
        first keeps it."""
        aside = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}")
        try:
            os.replace(self.path, aside)  # atomic: of two queues taking over, only one gets the stale lock
        except FileNotFoundError:
            pass
        else:
            if aside.read_text(encoding="utf-8") != seen:  # another queue's fresh lock, not the stale one: give it back
                os.link(aside, self.path)
                aside.unlink()
                raise self._refusal(None)
            aside.unlink()
        if not self._create():
            raise self._refusal(_lock_holder(self._holder_text()))
        if holder is not None:
            self.report(f"Note: an earlier queue on this folder (process {holder['pid']}, started "
                        f"{_clock(holder['started'])}) ended without removing {LOCK_NAME}; this queue takes it over.")

    def _refusal(self, holder: dict | None) -> UserFacingError:
        who = f" (process {holder['pid']}, started {_clock(holder['started'])})" if holder else ""
        return UserFacingError(f"Another queue{who} is already running on {self.path.parent}; wait until it "
                               "finishes, or stop it and start this one again.")


def _lock_holder(text: str | None) -> dict | None:
    """The lock's process id and start time; None when it is gone or cannot be read."""
    try:
        holder = json.loads(text or "")
    except ValueError:
        return None
    valid = isinstance(holder, dict) and isinstance(holder.get("pid"), int) and isinstance(holder.get("started"), float)
    return holder if valid else None


def _running(holder: dict) -> bool:
    """Whether the lock's process still runs: the same process id with the same start time (ids get reused)."""
    try:
        return abs(psutil.Process(holder["pid"]).create_time() - holder["started"]) < 1.0
    except psutil.Error:
        return False


def _clock(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def format_duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 2 h 07 min: as precise as a person reading a queue report wants."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


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
