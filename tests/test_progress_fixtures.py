"""Tiny trainings for the progress tests: the demo model, 10 images at 64 px, a handful of steps on 2 threads."""

from __future__ import annotations

import time
from pathlib import Path

from sd_scripts.args import TrainArgs
from sd_scripts.demo import DemoPaths
from test_train_fixtures import EventLog, demo_args, one_repeat_images  # noqa: F401 (fixtures)
from wizard.training_session import TrainingSession

ONE_QUICK_PROMPT = "shpz, a red circle --w 64 --h 64 --s 4 --l 7.5 --d 1\n"


def tiny_args(demo: DemoPaths, images: Path, output: Path, *, steps: int, with_sample: bool = False,
              **changes) -> TrainArgs:
    """`steps` optimizer steps of batch 2 (5 steps make an epoch); optionally one 4-step sample after each epoch."""
    if with_sample:
        prompts = output.parent / f"{output.name}-prompts.txt"
        prompts.write_text(ONE_QUICK_PROMPT, encoding="utf-8")
        changes = dict(sample_prompts=str(prompts), sample_every_n_epochs=1, sample_sampler="ddim") | changes
    return demo_args(demo, images, output, train_batch_size=2, max_train_steps=steps, cache_latents=True, **changes)


def poll_until_done(session: TrainingSession, timeout: float = 300.0) -> list:
    """What a UI thread does, without a UI: drain the events every 50 ms until the session reports its end."""
    events = []
    deadline = time.monotonic() + timeout
    while not session.done:
        assert time.monotonic() < deadline, f"The training did not end within {timeout} s."
        events += session.poll()
        time.sleep(0.05)
    return events
