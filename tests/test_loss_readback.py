"""Issue 14, item 3: on a GPU the loss is read back every so often, not every step, and a NaN step is skipped there.

A GPU is not needed to show it: torch's fused AdamW takes the same `found_inf` tensor on a CPU. These runs make the
trainer behave as on a GPU (the device check of `skips_non_finite_steps_on_device` answered as for "cuda") with an
interval long enough that only the run's own boundaries (a save, a sample, the end) read the losses, and count every
read of a tensor's value by the host while the run trains (what makes the host wait for a GPU).
"""

from __future__ import annotations

import shutil
import traceback
from pathlib import Path

import numpy
import pytest
import torch
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode

from sd_scripts.dataset import DatasetSettings, scan_dataset
from sd_scripts.dataset.epochs import epoch_batches
from sd_scripts.dataset.latent_cache import latents_npz_path
from sd_scripts.events import Failed, Saved, Step
from sd_scripts.train import train
from sd_scripts.training import loop
from sd_scripts.training.loss_readback import LossReadback, PendingStep, skips_non_finite_steps_on_device
from sd_scripts.training.state import OPTIMIZER_FILE
from test_train_fixtures import EventLog, demo_args, one_repeat_images  # noqa: F401 (fixtures)

HOST_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"}


class HostReads(TorchFunctionMode):
    """Every read of a tensor's value by Python (`.item()`, `bool(t)`, ...), with the line that asked for it.

    The DataLoader's own base seed (a host-only random number drawn once per epoch) is left out."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            stack = traceback.extract_stack()[:-1]
            if not any("torch/utils/data" in frame.filename for frame in stack):
                caller = stack[-1]
                self.lines.append(f"{Path(caller.filename).name}:{caller.lineno}")
        return func(*args, **(kwargs or {}))


def behave_as_on_a_gpu(monkeypatch) -> None:
    """The trainer's choices for a CUDA device, on this CPU; losses read only at the run's boundaries."""
    real = skips_non_finite_steps_on_device
    monkeypatch.setattr(loop, "skips_non_finite_steps_on_device",
                        lambda optimizer, device, scales_gradients: real(optimizer, torch.device("cuda"),
                                                                         scales_gradients))
    monkeypatch.setattr(loop, "READ_INTERVAL_S", 3600.0)


@pytest.fixture
def as_on_a_gpu(monkeypatch) -> None:
    behave_as_on_a_gpu(monkeypatch)


def train_counting_reads(args) -> tuple[object, EventLog, list[str]]:
    events, reads = EventLog(), HostReads()
    with reads:
        result = train(args, events)
    return result, events, reads.lines


def test_the_losses_are_read_once_per_save_and_the_run_is_the_same(demo, one_repeat_images, tmp_path, monkeypatch):
    settings = dict(max_train_steps=6, save_every_n_steps=2, optimizer_type="AdamW")
    every_step, every_step_events, every_step_reads = train_counting_reads(
        demo_args(demo, one_repeat_images, tmp_path / "every_step", **settings))
    assert every_step.ok
    assert len(every_step_reads) >= 6  # today's CPU behaviour: at least one read a step

    behave_as_on_a_gpu(monkeypatch)
    deferred, events, reads = train_counting_reads(demo_args(demo, one_repeat_images, tmp_path / "deferred", **settings))
    assert deferred.ok, deferred.message
    # The saves at steps 2 and 4 and the end at step 6 each read the losses of the steps before: 3 reads in 6 steps.
    assert len(reads) == 3 and len(set(reads)) == 1, reads

    steps = events.of(Step)
    assert [event.step for event in steps] == [1, 2, 3, 4, 5, 6]
    assert [event.loss for event in steps] == [event.loss for event in every_step_events.of(Step)]
    assert [event.average_loss for event in steps] == pytest.approx(
        [event.average_loss for event in every_step_events.of(Step)])
    for saved in events.of(Saved):  # the table and the window hear of every step before a save of it
        reported_before = [event.step for event in events[: events.index(saved)] if isinstance(event, Step)]
        assert reported_before == list(range(1, saved.step + 1))
    expected, got = load_file(every_step.lora_path), load_file(deferred.lora_path)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_a_nan_step_is_skipped_by_the_optimizer_and_reported_at_the_next_read(demo, one_repeat_images, tmp_path,
                                                                               as_on_a_gpu):
    """The NaN of step 3 (a poisoned latent cache file) is seen only when the losses are read at step 6: the fused
    AdamW skipped step 3 itself (its step count says 5 of 6), and what is kept is finite."""
    images = tmp_path / "images"
    shutil.copytree(one_repeat_images, images)
    output = tmp_path / "out"
    args = demo_args(demo, images, output, max_train_steps=6, cache_latents_to_disk=True, optimizer_type="AdamW")
    plan = scan_dataset(DatasetSettings.from_train_args(args))
    poisoned = latents_npz_path(plan.images[epoch_batches(plan, 1)[2].images[0]])  # batch 1 image each: step 3
    numpy.savez(poisoned, latents=numpy.full((4, 8, 8), numpy.nan, numpy.float32))

    result, events, reads = train_counting_reads(args)

    failed = events[-1]
    assert not result.ok and isinstance(failed, Failed)
    assert failed.message == "The loss became NaN (not a number) at step 3, so the LoRA stopped learning."
    assert [event.step for event in events.of(Step)] == [1, 2]
    kept = Path(result.lora_path)
    assert kept.name == "demo-step00000006.safetensors"
    assert all(torch.isfinite(tensor).all() for tensor in load_file(kept).values())
    optimizer_state = torch.load(Path(result.resume_state) / OPTIMIZER_FILE, weights_only=True)
    assert {float(state["step"]) for state in optimizer_state["state"].values()} == {5.0}


def test_pending_steps_are_read_together_oldest_first():
    readback = LossReadback(interval_s=3600.0)
    assert not readback.due() and readback.read() == []
    for step, loss in ((1, 0.5), (2, float("nan")), (3, 0.25)):
        readback.add(PendingStep(step=step, epoch=1, loss=torch.tensor(loss), lr=1e-4, steps_per_second=1.0,
                                 elapsed_s=float(step), eta_s=0.0))
    assert not readback.due()  # within the interval
    read = readback.read()
    assert [pending.step for pending, _ in read] == [1, 2, 3]
    assert read[0][1] == 0.5 and numpy.isnan(read[1][1]) and read[2][1] == 0.25
    assert readback.read() == []
    readback.add(PendingStep(step=4, epoch=1, loss=torch.tensor(1.0), lr=1e-4, steps_per_second=1.0, elapsed_s=4.0,
                             eta_s=0.0))
    readback.interval_s = 0.0
    assert readback.due()


def test_only_a_fused_adam_on_a_gpu_without_a_gradient_scaler_skips_on_the_device():
    weight = torch.nn.Parameter(torch.zeros(2))
    fused, plain = torch.optim.AdamW([weight], fused=True), torch.optim.AdamW([weight], foreach=True)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert skips_non_finite_steps_on_device(fused, cuda, scales_gradients=False)
    assert not skips_non_finite_steps_on_device(fused, cpu, scales_gradients=False)  # a CPU read costs nothing
    assert not skips_non_finite_steps_on_device(fused, cuda, scales_gradients=True)  # fp16's scaler sets found_inf
    assert not skips_non_finite_steps_on_device(plain, cuda, scales_gradients=False)
    assert not skips_non_finite_steps_on_device(torch.optim.SGD([weight]), cuda, scales_gradients=False)
