"""The queue under faults: a crashing trainer, a run the user stops (and its resume), files removed, edited and added
while the queue runs, two queues on one folder; and after each, a summary that counts and times every file.

Two tests train for real on the tiny demo model through `popup_main.py --queue` (a crash inside training, and Ctrl+C
then the resume); the others drive `run_queue` with a `run_one` of their own, as the trainer is not what they test.
"""

from __future__ import annotations

import csv
import json
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

import questions
from sd_scripts.errors import UserFacingError
from sd_scripts.saving import load_lora_file
from sd_scripts.training.loop import TrainingSession
from wizard import queue as queue_module
from wizard import runner
from wizard.app import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from wizard.askers.scripted import ScriptedAsker
from wizard.config import TrainConfig
from wizard.formats import seed_json, settings_file
from wizard.queue import LOCK_NAME, run_queue

TINY = {
    "train_resolution": 64, "buckets": False, "batch_size": 2, "max_steps": 4, "net_dim": 4, "alpha": 4.0,
    "optimizer_type": "AdamW", "mixed_precision": "no", "xformers": False, "sample_prompts": None,
}


@dataclass
class Result:
    ok: bool
    message: str = ""
    lora_path: str | None = None
    resume_state: str | None = None


def save_settings(queue: Path, file_name: str, **values) -> Path:
    """A settings file as the wizard saves it (every setting), renamed to sort where the test wants it."""
    config = TrainConfig(cuda=False)
    for name, value in {**TINY, **values}.items():
        config.set(name, value)
    return seed_json.save(config, queue).rename(queue / file_name)


def write_settings(folder: Path, name: str, **values) -> Path:
    path = folder / name
    path.write_text(json.dumps({"config_version": 1, **values}), encoding="utf-8")
    return path


@pytest.fixture
def released(monkeypatch) -> list[int]:
    """Counts the queue's memory releases between runs instead of collecting garbage (seconds with torch loaded)."""
    calls: list[int] = []
    monkeypatch.setattr(queue_module, "release_memory", lambda: calls.append(1))
    return calls


@pytest.fixture
def clock(monkeypatch, released) -> list[float]:
    """The queue's clock, moved on by the fake runs, so the summary's durations are known exactly."""
    now = [1000.0]
    monkeypatch.setattr(queue_module.time, "monotonic", lambda: now[0])
    return now


# --- for real, on the tiny demo ---------------------------------------------------------------------------------
def test_a_trainer_crash_is_set_aside_with_its_bug_report_and_the_queue_goes_on(tmp_path, demo, one_thread,
                                                                                monkeypatch):
    real_step = TrainingSession.optimizer_step

    def crash_in_the_first_run(self, *args, **kwargs):
        if self.args.output_name == "crashes" and self.position.global_step == 1:
            raise RuntimeError("an injected fault inside training")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(TrainingSession, "optimizer_step", crash_in_the_first_run)
    output, queue = tmp_path / "loras", tmp_path / "queue"
    output.mkdir(), queue.mkdir()
    common = {"base_model": str(demo.model), "img_folder": str(demo.images), "output_folder": str(output)}
    save_settings(queue, "1_crashes.json", change_output_name="crashes", **common)
    save_settings(queue, "2_trains.json", change_output_name="trains", max_steps=2, **common)

    asker = ScriptedAsker()
    assert main(["--queue", str(queue)], questions.FLOWS, asker=asker) == EXIT_FAILED

    (bug_report,) = output.glob("training-error-*.log")  # the trainer's own, named in the sentence the queue keeps
    assert "RuntimeError: an injected fault inside training" in bug_report.read_text(encoding="utf-8")
    reason = (queue / "failed" / "1_crashes.error.txt").read_text(encoding="utf-8").strip()
    assert reason == (f"The training stopped on an unexpected error; this is a bug, please report it with the log "
                      f"file {bug_report}.")
    assert not (output / "crashes.safetensors").exists()
    assert load_lora_file(output / "trains.safetensors")[1]["ss_steps"] == "2"  # the next file trained all the same
    assert sorted(path.name for path in (queue / "complete").iterdir()) == ["2_trains.json"]
    assert sorted(path.name for path in (queue / "failed").iterdir()) == ["1_crashes.error.txt", "1_crashes.json"]
    (kind, title, message) = asker.messages[-1]
    assert (kind, title) == ("info", "Queue finished")
    assert message.startswith("Queue finished: 1 of 2 trainings worked, 1 failed.\n")
    assert f"\n  failed  1_crashes.json: {reason} (" in message
    assert f"\n  ok      2_trains.json -> {output / 'trains.safetensors'} (" in message
    assert not (queue / LOCK_NAME).exists()


def test_a_run_stopped_with_ctrl_c_stays_in_the_queue_and_the_next_start_resumes_it(tmp_path, demo, one_thread,
                                                                                     monkeypatch):
    class CtrlCAtStepTwo(runner.ConsoleProgress):
        """The console bar, and the user pressing Ctrl+C once the second step is shown."""

        def __call__(self, event) -> None:
            super().__call__(event)
            if getattr(event, "step", None) == 2 and getattr(event, "total_steps", None) == 4:
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(runner, "ConsoleProgress", CtrlCAtStepTwo)
    output, queue = tmp_path / "loras", tmp_path / "queue"
    output.mkdir(), queue.mkdir()
    stopped = save_settings(queue, "1_stopped.json", base_model=str(demo.model), img_folder=str(demo.images),
                            output_folder=str(output), change_output_name="stopped")
    later = save_settings(queue, "2_later.json", base_model=str(demo.model), img_folder=str(tmp_path / "gone"),
                          output_folder=str(output), change_output_name="later")

    asker = ScriptedAsker()
    assert main(["--queue", str(queue)], questions.FLOWS, asker=asker) == EXIT_OK
    state = output / "stopped-step00000002-state"
    assert load_lora_file(output / "stopped-step00000002.safetensors")[1]["ss_steps"] == "2"
    assert json.loads(stopped.read_text(encoding="utf-8"))["resume"] == str(state) and state.is_dir()
    assert later.exists() and not (queue / "complete").exists() and not (queue / "failed").exists()
    (kind, title, message) = asker.messages[-1]
    assert (kind, title) == ("info", "Queue stopped")
    assert message.startswith("Queue stopped: 0 of 2 trainings worked, 0 failed, 1 stopped, 1 not started.\n"
                              f"  stopped 1_stopped.json: stopped; the next queue start continues it from {state}. (")
    assert "\n  not started 2_later.json\n" in message

    asker = ScriptedAsker()
    assert main(["--queue", str(queue)], questions.FLOWS, asker=asker) == EXIT_FAILED  # 2_later's folder is missing
    lora, metadata = load_lora_file(output / "stopped.safetensors")
    assert metadata["ss_steps"] == "4" and any(key.startswith("lora_unet_") for key in lora)
    with (output / "stopped-loss.csv").open(encoding="utf-8") as table:
        assert [int(row["step"]) for row in csv.DictReader(table)] == [1, 2, 3, 4]  # steps 3 and 4 continued 1-2
    assert sorted(path.name for path in (queue / "complete").iterdir()) == ["1_stopped.json"]
    assert sorted(path.name for path in (queue / "failed").iterdir()) == ["2_later.error.txt", "2_later.json"]
    (kind, title, message) = asker.messages[-1]
    assert (kind, title) == ("info", "Queue finished")
    assert message.startswith("Queue finished: 1 of 2 trainings worked, 1 failed.\n"
                              f"  ok      1_stopped.json -> {output / 'stopped.safetensors'} (")


# --- through the run_one seam -----------------------------------------------------------------------------------
def test_an_unexpected_error_around_the_trainer_keeps_its_traceback_beside_the_file(tmp_path, clock):
    write_settings(tmp_path, "a.json", net_dim=4)
    write_settings(tmp_path, "b.json", net_dim=8)

    def run_one(config, *, position):
        clock[0] += 3
        if config.get("net_dim") == 4:
            raise KeyError("no such setting")
        return Result(True, lora_path="/loras/b.safetensors")

    summary = run_queue(tmp_path, run_one, report=lambda line: None)
    error_file = tmp_path / "failed" / "a.error.txt"
    sentence = (f"Unexpected error (KeyError: 'no such setting'); this is a bug, please report it with {error_file}, "
                "which holds the details.")
    text = error_file.read_text(encoding="utf-8")
    assert text.startswith(sentence + "\n\nTraceback (most recent call last):\n")
    assert "in run_one\n" in text and text.endswith("KeyError: 'no such setting'\n")
    assert summary.text().splitlines()[:3] == ["Queue finished: 1 of 2 trainings worked, 1 failed.",
                                               f"  failed  a.json: {sentence} (3 s)",
                                               "  ok      b.json -> /loras/b.safetensors (3 s)"]


def test_a_stopped_toml_keeps_its_comments_and_gets_one_resume_line(tmp_path, clock):
    toml = tmp_path / "1_run.toml"
    toml.write_text('# my settings\n[model_arguments]\nnetwork_dim = 8  # small\n\n[training_arguments]\n'
                    'resume = "/an/older/state"\nmax_train_steps = 40\n', encoding="utf-8")
    write_settings(tmp_path, "2_next.json", net_dim=4)
    write_settings(tmp_path, "3_last.json", net_dim=2)
    resumed_from: list[str | None] = []

    def run_one(config, *, position):
        resumed_from.append(config.get("resume"))
        clock[0] += 125
        if config.get("net_dim") == 8 and len(resumed_from) == 1:
            return Result(True, lora_path="/loras/run-step00000020.safetensors", resume_state="/loras/run-state")
        return Result(True, lora_path=f"/loras/{config.get('net_dim')}.safetensors")

    lines: list[str] = []
    first = run_queue(tmp_path, run_one, report=lines.append)
    assert resumed_from == ["/an/older/state"]  # the user pressed Stop: the other two did not start
    assert toml.read_text(encoding="utf-8") == ('resume = "/loras/run-state"\n# my settings\n[model_arguments]\n'
                                                'network_dim = 8  # small\n\n[training_arguments]\n'
                                                'max_train_steps = 40\n')
    assert settings_file.load(toml)[0].get("resume") == "/loras/run-state"
    assert lines[1] == ("[1/3] 1_run.toml: stopped; the next queue start continues it from /loras/run-state. The "
                        "queue stops here.")
    assert first.summary_file.read_text(encoding="utf-8").splitlines()[1:] == [
        "Queue stopped: 0 of 3 trainings worked, 0 failed, 1 stopped, 2 not started.",
        "  stopped 1_run.toml: stopped; the next queue start continues it from /loras/run-state. (2 min 05 s)",
        "  not started 2_next.json",
        "  not started 3_last.json",
        f"Start the queue on {tmp_path} again to continue the stopped training and run the rest."]

    second = run_queue(tmp_path, run_one, report=lambda line: None)
    assert resumed_from == ["/an/older/state", "/loras/run-state", None, None]
    assert [(entry.name, entry.outcome) for entry in second.entries] == [
        ("1_run.toml", "done"), ("2_next.json", "done"), ("3_last.json", "done")]
    assert sorted(path.name for path in (tmp_path / "complete").iterdir()) == ["1_run.toml", "2_next.json",
                                                                              "3_last.json"]


def test_files_edited_removed_or_added_while_the_queue_runs(tmp_path, clock, released):
    for number in (1, 2, 3, 4):
        write_settings(tmp_path, f"{number}.json", net_dim=number)
    trained: list[tuple[int, tuple[int, int]]] = []

    def run_one(config, *, position):
        trained.append((config.get("net_dim"), position))
        clock[0] += 10 * config.get("net_dim")
        if config.get("net_dim") == 1:  # while the first run trains, the user changes the folder
            write_settings(tmp_path, "2.json", net_dim=20)
            (tmp_path / "3.json").unlink()
            write_settings(tmp_path, "0_added.json", net_dim=5)
        if config.get("net_dim") == 20:
            (tmp_path / "2.json").unlink()  # removed during its own run: its outcome is still reported
        return Result(True, lora_path=f"/loras/{config.get('net_dim')}.safetensors")

    lines: list[str] = []
    summary = run_queue(tmp_path, run_one, report=lines.append)
    assert trained == [(1, (1, 4)), (20, (2, 4)), (4, (4, 4)), (5, (5, 5))]  # read at its turn; the added one last
    assert len(released) == 4  # the memory a run left is released after each run
    assert "[3/4] 3.json: it was removed from the queue folder before its turn, so nothing ran." in lines
    assert summary.text().splitlines() == [
        "Queue finished: 4 of 5 trainings worked, 0 failed, 1 removed.",
        "  ok      1.json -> /loras/1.safetensors (10 s)",
        "  ok      2.json -> /loras/20.safetensors (3 min 20 s)",
        "  removed 3.json: it was removed from the queue folder before its turn, so nothing ran.",
        "  ok      4.json -> /loras/4.safetensors (40 s)",
        "  ok      0_added.json -> /loras/5.safetensors (50 s)",
        f"The finished files are in {tmp_path / 'complete'}."]
    assert [entry.moved_to for entry in summary.entries] == [
        tmp_path / "complete" / "1.json", None, None, tmp_path / "complete" / "4.json",
        tmp_path / "complete" / "0_added.json"]


def test_a_second_queue_on_the_same_folder_refuses_with_one_sentence(tmp_path, released):
    write_settings(tmp_path, "1.json", net_dim=4)
    training, finish = threading.Event(), threading.Event()
    outcome: list = []

    def slow_run(config, *, position):
        training.set()
        assert finish.wait(30)
        return Result(True, lora_path="/loras/1.safetensors")

    first = threading.Thread(target=lambda: outcome.append(run_queue(tmp_path, slow_run, report=lambda line: None)))
    first.start()
    assert training.wait(30)
    lock = json.loads((tmp_path / LOCK_NAME).read_text(encoding="utf-8"))
    assert lock == {"pid": psutil.Process().pid, "started": psutil.Process().create_time()}
    with pytest.raises(UserFacingError) as refused:
        run_queue(tmp_path, slow_run, report=lambda line: None)
    started = queue_module._clock(lock["started"])
    assert str(refused.value) == (f"Another queue (process {lock['pid']}, started {started}) is already running on "
                                  f"{tmp_path}; wait until it finishes, or stop it and start this one again.")
    finish.set()
    first.join(30)
    assert [(entry.name, entry.outcome) for entry in outcome[0].entries] == [("1.json", "done")]
    assert not (tmp_path / LOCK_NAME).exists()  # the lock goes with the queue that made it


def test_the_popups_say_why_a_queue_did_not_start(tmp_path):
    write_settings(tmp_path, "1.json", net_dim=4)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": psutil.Process().pid,
                                                  "started": psutil.Process().create_time()}), encoding="utf-8")
    asker = ScriptedAsker()
    trained: list[TrainConfig] = []
    assert main(["--queue", str(tmp_path)], questions.FLOWS, asker=asker,
                train=lambda config, asker, run_position=None: trained.append(config)) == EXIT_USAGE
    ((kind, title, message),) = asker.messages
    assert (kind, title) == ("error", "The queue did not start") and message.startswith("Another queue (process ")
    assert trained == [] and (tmp_path / "1.json").exists()  # the other queue's lock and files are left alone
    assert (tmp_path / LOCK_NAME).exists()


def finished_process() -> tuple[int, float]:
    """A process that has ended: its id and start time are what a crashed queue's lock would hold."""
    process = psutil.Popen([sys.executable, "-c", ""])
    started = process.create_time()
    process.wait(30)
    return process.pid, started


@pytest.mark.parametrize("holder", ["ended", "id reused"])
def test_a_lock_left_by_a_queue_that_is_gone_is_taken_over_with_a_note(tmp_path, holder, released):
    pid, started = finished_process() if holder == "ended" else (psutil.Process().pid, 12345.5)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "started": started}), encoding="utf-8")
    write_settings(tmp_path, "1.json", net_dim=4)
    lines: list[str] = []
    summary = run_queue(tmp_path, lambda config, position: Result(True), report=lines.append)
    assert lines[0] == (f"Note: an earlier queue on this folder (process {pid}, started {queue_module._clock(started)}) "
                        f"ended without removing {LOCK_NAME}; this queue takes it over.")
    assert [entry.outcome for entry in summary.entries] == ["done"] and not (tmp_path / LOCK_NAME).exists()
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith("queue-summary-")) == [
        "complete"]  # no lock copy left behind


def test_an_unreadable_lock_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("", encoding="utf-8")  # a queue between creating its lock and writing it
    write_settings(tmp_path, "1.json", net_dim=4)
    with pytest.raises(UserFacingError) as refused:
        run_queue(tmp_path, lambda config, position: Result(True), report=lambda line: None)
    assert str(refused.value) == (f"{tmp_path / LOCK_NAME} cannot be read, so another queue may be starting on this "
                                  "folder; if none is running, delete that file and start the queue again.")
    assert (tmp_path / "1.json").exists() and (tmp_path / LOCK_NAME).read_text(encoding="utf-8") == ""


def test_a_stopped_file_broken_meanwhile_is_left_as_it_is_and_the_sentence_says_how_to_resume(tmp_path, clock):
    settings = write_settings(tmp_path, "1.json", net_dim=4)

    def run_one(config, *, position):
        settings.write_text('{"net_dim": 4,', encoding="utf-8")  # the user saves a half-edited file meanwhile
        return Result(True, lora_path="/loras/1-step00000003.safetensors", resume_state="/loras/1-step00000003-state")

    (entry,) = run_queue(tmp_path, run_one, report=lambda line: None).entries
    assert (entry.outcome, entry.moved_to) == ("stopped", settings)
    assert entry.reason.startswith("stopped, but the resume point could not be written into the file (")
    assert entry.reason.endswith("); set its resume setting to /loras/1-step00000003-state to continue it.")
    assert settings.read_text(encoding="utf-8") == '{"net_dim": 4,'
