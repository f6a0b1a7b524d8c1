"""One training run in a worker thread, and the queue that carries its events to the thread that shows them.

The trainer calls its event handler from the thread it runs in; a UI toolkit may only be touched from its own main
thread. So the worker only puts events on a `queue.Queue`, and the UI thread takes them off with `poll()` on a timer
(Tk: `root.after`). Nothing here knows a toolkit: the console bar, the Tk window and the tests all read the same
session.
"""

from __future__ import annotations

import importlib
import queue
import threading
from typing import Callable

from sd_scripts.args import TrainArgs
from sd_scripts.events import Event, EventHandler
from sd_scripts.training.result import TrainResult

POLL_WITHOUT_UI_S = 0.25  # how often the events are echoed when no UI polls them


class TrainingSession:
    """Starts `sd_scripts.train.train(args)` in a worker thread at once; `poll()` hands its events to the caller.

    `on_done(result)` is called by the first `poll()` that finds the worker ended and every event handed out, so
    the caller has shown all events before it hears the outcome. `echo` (e.g. the console progress bar) sees each
    event as `poll()` hands it out, on the polling thread.
    """

    def __init__(self, args: TrainArgs, on_done: Callable[[TrainResult], None],
                 *, echo: EventHandler | None = None) -> None:
        self.args = args
        self.result: TrainResult | None = None  # set once the worker has ended
        self._on_done = on_done
        self._echo = echo
        self._events: queue.Queue[Event] = queue.Queue()
        self._stop = threading.Event()
        self._worker_ended = threading.Event()
        self._done_reported = False
        # Not a daemon: if the program ends while training, Python waits for the trainer to return (it saves first).
        self._worker = threading.Thread(target=self._work, name="training", daemon=False)
        self._worker.start()

    def _work(self) -> None:
        try:
            # Usually imported already by warm_up_trainer while the pre-flight report was read; otherwise torch
            # loads here, in the worker, while the window already shows.
            from sd_scripts.train import train

            self.result = train(self.args, on_event=self._events.put, stop=self._stop)
        except Exception as error:  # train() words its failures; this guard keeps the UI from waiting forever
            self.result = TrainResult(ok=False, lora_path=None,
                                      message=f"The training could not run ({type(error).__name__}: {error}).")
            raise
        finally:
            self._worker_ended.set()

    def poll(self) -> list[Event]:
        """Every event the trainer reported since the last call, oldest first; never blocks."""
        ended_before_draining = self._worker_ended.is_set()
        events: list[Event] = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        if self._echo is not None:
            for event in events:
                self._echo(event)
        if ended_before_draining and not events and not self._done_reported:
            self._done_reported = True
            self._on_done(self.result)
        return events

    def stop(self) -> None:
        """Ask the trainer to stop after the current step; it saves the LoRA so far and a state to resume from."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def done(self) -> bool:
        """True once `on_done` has been called."""
        return self._done_reported

    def follow_in_console(self) -> TrainResult:
        """Hand out the events to `echo` until the trainer ends, and return its result without calling `on_done`:
        for when the UI that polled them is gone (its display was lost) and the console shows the rest."""
        self._done_reported = True
        while not self._worker_ended.wait(POLL_WITHOUT_UI_S):
            self.poll()
        self.poll()
        return self.result

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker has ended (for callers with no event loop); True when it has."""
        return self._worker_ended.wait(timeout)


def warm_up_trainer() -> threading.Thread:
    """Import the trainer's libraries in the background, e.g. while the pre-flight report is being read.

    Importing large extension modules (torch, diffusers, bitsandbytes) holds Python's GIL for 100 to 250 ms at a time;
    done inside the training worker it makes the progress window stutter while the model loads (see README, measured
    figures). A second import of the same modules later is free.
    """
    thread = threading.Thread(target=importlib.import_module, args=("sd_scripts.training.loop",),
                              name="trainer import", daemon=True)
    thread.start()
    return thread

