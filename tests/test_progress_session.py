"""The worker thread and its event queue, without any toolkit: order, stop, failure, the end-of-run message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sd_scripts.events import EpochEnd, Failed, Finished, Saved, Started, Step
from sd_scripts.saving import load_lora_file
from test_progress_fixtures import EventLog, one_repeat_images, poll_until_done, tiny_args  # noqa: F401
from wizard.runner import outcome_text
from wizard.training_session import TrainingSession


class DoneLog(list):
    """An on_done handler that keeps what it was called with."""

    def __call__(self, result) -> None:
        self.append(result)


@pytest.fixture(scope="module")
def finished_run(demo, one_repeat_images, tmp_path_factory):
    """Three steps through a session, polled as a UI would; the console echo sees the same events."""
    output = tmp_path_factory.mktemp("session")
    done, echo = DoneLog(), EventLog()
    session = TrainingSession(tiny_args(demo, one_repeat_images, output, steps=3), on_done=done, echo=echo)
    events = poll_until_done(session)
    return session, events, done, echo


def test_events_arrive_in_order_and_the_result_is_set(finished_run):
    session, events, done, echo = finished_run
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    assert [event.step for event in events if isinstance(event, Step)] == [1, 2, 3]
    kinds = [type(event) for event in events]
    assert kinds.index(EpochEnd) > kinds.index(Step) and kinds.index(Saved) < kinds.index(Finished)
    assert echo == events  # the console bar is fed the very same events, on the polling thread
    assert done == [session.result] and session.result.ok and session.result.steps == 3
    assert not events[-1].stopped_early and events[-1].lora_path == session.result.lora_path


def test_on_done_is_called_once_and_only_after_the_last_event(finished_run):
    session, _, done, _ = finished_run
    assert session.poll() == [] and session.poll() == []
    assert len(done) == 1


def test_stop_ends_the_run_with_a_lora_that_loads(demo, one_repeat_images, tmp_path):
    done = DoneLog()
    session = TrainingSession(tiny_args(demo, one_repeat_images, tmp_path, steps=50), on_done=done)
    events = []
    while not any(isinstance(event, Step) for event in events):
        events += session.poll()
        time.sleep(0.05)
    session.stop()
    assert session.stopping
    events += poll_until_done(session)
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.stopped_early and finished.steps < 50
    tensors, metadata = load_lora_file(finished.lora_path)
    assert any(key.endswith("lora_down.weight") for key in tensors) and metadata["ss_steps"] == str(finished.steps)
    saved = [event for event in events if isinstance(event, Saved)]
    assert saved[-1].state_dir is not None and Path(saved[-1].state_dir).is_dir()
    assert done == [session.result] and session.result.lora_path == finished.lora_path


def test_a_failure_reaches_on_done_as_a_failed_result(demo, tmp_path):
    empty = tmp_path / "images"
    (empty / "5_nothing").mkdir(parents=True)
    done = DoneLog()
    session = TrainingSession(tiny_args(demo, empty, tmp_path / "out", steps=3), on_done=done)
    events = poll_until_done(session)
    assert [type(event) for event in events] == [Failed]
    assert events[0].message and done[0].ok is False and done[0].message == events[0].message


def test_the_end_of_run_message_names_the_file_its_size_and_the_trigger_word(finished_run):
    session, _, _, _ = finished_run
    text = outcome_text(session.result)
    assert session.result.lora_path in text
    assert " KB." in text or " MB." in text
    assert "models/Lora" in text and "models/loras" in text
    assert "\u201cshpz\u201d" in text  # the demo captions' shared first tag, read from the LoRA's metadata


def test_warming_up_imports_the_trainer_in_the_background():
    import sys

    from wizard.training_session import warm_up_trainer

    thread = warm_up_trainer()
    thread.join(timeout=120)
    assert not thread.is_alive() and thread.daemon and "sd_scripts.training.loop" in sys.modules
