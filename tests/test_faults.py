"""Faults during a run of the tiny demo model (issue 13, item 2): Stop while sampling and while saving, a NaN loss,
running out of memory, a full disk. Each ends with a LoRA or one sentence, every earlier output whole and loadable,
nothing half-written under a final name, and a state that resumes the run at the right step.

A process killed while saving and a lost display are in test_faults_processes.py (they need a process of their own).
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from fault_checks import check_outputs_whole, resume_and_finish, temporary_leftovers
from sd_scripts.dataset import DatasetSettings, scan_dataset
from sd_scripts.dataset.epochs import epoch_batches
from sd_scripts.dataset.latent_cache import latents_npz_path
from sd_scripts.events import Failed, Finished, SampleMade, Saved
from sd_scripts.saving import lora_file
from sd_scripts.train import train
from sd_scripts.training.sampling import read_prompt_file
from test_train_fixtures import EventLog, demo_args, one_repeat_images  # noqa: F401 (fixtures)

REPOSITORY = Path(__file__).resolve().parents[1]


def step_save(folder: Path, step: int) -> tuple[Path, Path]:
    """The LoRA a stopped or failed run leaves at `step`, and its state folder (sd-scripts' names)."""
    return folder / f"demo-step{step:08d}.safetensors", folder / f"demo-step{step:08d}-state"


def assert_one_sentence(text: str) -> None:
    assert "\n" not in text and "Traceback" not in text and text.endswith("."), text


# --- Stop ---------------------------------------------------------------------------------------------------------
def test_stop_while_sampling_keeps_the_samples_made_and_the_state_resumes(demo, one_repeat_images, tmp_path):
    stop, events = threading.Event(), EventLog()

    def press_stop_when_the_first_sample_shows(event):
        events(event)
        if isinstance(event, SampleMade):
            stop.set()

    prompt_file = tmp_path / "prompts.txt"  # the demo's two prompts, in 3 denoising steps to be quick
    prompt_file.write_text("".join(line.replace("--s 10", "--s 3") + "\n"
                                   for line in demo.prompts.read_text().splitlines()))
    output = tmp_path / "out"
    args = demo_args(demo, one_repeat_images, output, max_train_steps=3, sample_prompts=str(prompt_file),
                     sample_every_n_steps=2, sample_sampler="ddim")
    result = train(args, press_stop_when_the_first_sample_shows, stop)

    assert result.ok and result.steps == 2 and events[-1] == events.of(Finished)[0] and events[-1].stopped_early
    prompts = read_prompt_file(prompt_file)
    assert [prompt.steps for prompt in prompts] == [3, 3]
    made = events.of(SampleMade)
    assert len(made) == 1 < len(prompts) and made[0].prompt == prompts[0].prompt  # the second was never rendered
    lora, state = step_save(output, 2)
    outputs = check_outputs_whole(output)
    assert {lora.name, state.name, Path(made[0].path).name} <= outputs.keys()
    assert sorted(path.name for path in (output / "sample").iterdir()) == [Path(made[0].path).name]
    assert temporary_leftovers(output) == []
    resume_and_finish(args, state)


def test_stop_while_saving_finishes_that_file_and_the_state_resumes(demo, one_repeat_images, tmp_path, monkeypatch):
    stop, events = threading.Event(), EventLog()
    write_atomically = lora_file.write_atomically

    def press_stop_while_the_lora_is_written(path, write):
        stop.set()  # the Stop button, pressed while the file is being written
        write_atomically(path, write)

    monkeypatch.setattr(lora_file, "write_atomically", press_stop_while_the_lora_is_written)
    args = demo_args(demo, one_repeat_images, tmp_path, max_train_steps=3, save_every_n_steps=2)
    result = train(args, events, stop)
    monkeypatch.undo()

    lora, state = step_save(tmp_path, 2)
    assert result.ok and result.steps == 2 and result.lora_path == str(lora) and result.resume_state == str(state)
    assert [event.path for event in events.of(Saved)] == [str(lora)]  # written once, whole; the state added beside
    assert {lora.name, state.name} <= check_outputs_whole(tmp_path).keys()
    assert temporary_leftovers(tmp_path) == []
    resume_and_finish(args, state)


# --- a NaN loss ---------------------------------------------------------------------------------------------------
def test_a_nan_loss_stops_keeping_the_lora_from_before_that_step(demo, one_repeat_images, tmp_path):
    """A latent cache file with NaN in it (what SDXL's VAE makes in fp16) poisons the third step's batch."""
    images = tmp_path / "images"
    shutil.copytree(one_repeat_images, images)
    output = tmp_path / "out"
    args = demo_args(demo, images, output, max_train_steps=3, cache_latents_to_disk=True)
    plan = scan_dataset(DatasetSettings.from_train_args(args))
    poisoned = latents_npz_path(plan.images[epoch_batches(plan, 1)[2].images[0]])  # batch 1 image each: step 3
    numpy.savez(poisoned, latents=numpy.full((4, 8, 8), numpy.nan, numpy.float32))

    events = EventLog()
    result = train(args, events)

    lora, state = step_save(output, 2)
    failed = events[-1]
    assert not result.ok and isinstance(failed, Failed)
    assert failed.message == "The loss became NaN (not a number) at step 3, so the LoRA stopped learning."
    assert failed.advice == (f"What was learned up to step 2 is kept in {lora}; the run can be continued from {state}. "
                             "Lower the learning rate, or use bf16 instead of fp16 mixed precision.")
    assert (result.lora_path, result.resume_state) == (str(lora), str(state))
    assert [(event.path, event.step, event.state_dir) for event in events.of(Saved)] == [(str(lora), 2, str(state))]
    kept = load_file(str(lora))
    assert all(torch.isfinite(tensor).all() for tensor in kept.values())
    assert any(tensor.abs().sum() > 0 for key, tensor in kept.items() if "lora_up" in key)  # two steps learned
    assert {lora.name, state.name} <= check_outputs_whole(output).keys()

    poisoned.unlink()  # the user deletes the bad cache file; it is made again from the image
    resume_and_finish(args, state)


# --- out of memory ------------------------------------------------------------------------------------------------
def test_out_of_memory_keeps_what_was_learned_and_advises_from_the_settings(demo, one_repeat_images, tmp_path,
                                                                           monkeypatch):
    forward, unets = UNet2DConditionModel.forward, []

    def forward_that_runs_out_of_memory_in_step_three(unet, *args, **kwargs):
        unets.append(weakref.ref(unet))
        if len(unets) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8.00 GiB total).")
        return forward(unet, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", forward_that_runs_out_of_memory_in_step_three)
    args = demo_args(demo, one_repeat_images, tmp_path, train_batch_size=2, max_train_steps=3, save_every_n_steps=1)
    events = EventLog()
    result = train(args, events)
    monkeypatch.undo()

    lora, state = step_save(tmp_path, 2)
    failed = events[-1]
    assert not result.ok and isinstance(failed, Failed)
    assert failed.message == "The training ran out of memory on the graphics card (VRAM) at step 3."
    assert failed.advice == (
        f"What was learned up to step 2 is kept in {lora}; the run can be continued from {state}. To need less, in "
        "this order: turn on gradient checkpointing; turn on latent caching; use an 8-bit optimizer such as "
        "AdamW8bit; lower the batch size from 2 to 1; close other programs that use the memory.")
    assert [(event.step, event.state_dir) for event in events.of(Saved)] == [(1, None), (2, None)]  # + the state
    assert {step_save(tmp_path, 1)[0].name, lora.name, state.name} <= check_outputs_whole(tmp_path).keys()
    gc.collect()
    assert unets[0]() is None  # the model (and on a GPU its memory) is released when train() returns
    resume_and_finish(args, state)


# --- a full disk --------------------------------------------------------------------------------------------------
DISK_MB = 16
IN_NAMESPACE = "WIZARD_TEST_FAULTS_IN_NAMESPACE"


def test_a_full_disk_says_so_keeps_the_earlier_saves_and_the_state_before_resumes(demo, one_repeat_images, tmp_path):
    """The output folder is a 16 MB tmpfs. Root mounts it here; anyone else runs this test again in a user and mount
    namespace of its own (`unshare`), where mounting a tmpfs is allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        if os.environ.get(IN_NAMESPACE):
            pytest.fail(f"A {DISK_MB} MB tmpfs could not be mounted even in a namespace of our own: "
                        f"{mounted.stderr.strip()}", pytrace=False)
        run_again_in_a_namespace_of_its_own(demo)
        return
    try:
        fill_the_disk_after_step_one(demo, one_repeat_images, disk)
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)


def run_again_in_a_namespace_of_its_own(demo) -> None:
    test = f"tests/{Path(__file__).name}::test_a_full_disk_says_so_keeps_the_earlier_saves_and_the_state_before_resumes"
    command = ["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-m", "pytest", "-q",
               "-p", "no:cacheprovider", test]
    env = {**os.environ, IN_NAMESPACE: "1", "WIZARD_TEST_DEMO_ROOT": str(demo.model.parent)}
    try:
        done = subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        pytest.fail("The disk-full test needs root or the unshare command (util-linux) to mount a small tmpfs.",
                    pytrace=False)
    if "unshare:" in done.stderr:
        pytest.fail("The disk-full test needs root or user namespaces to mount a small tmpfs, and unshare was refused "
                    f"({done.stderr.strip()}); run the tests as root or allow unprivileged user namespaces.",
                    pytrace=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def fill_the_disk_after_step_one(demo, images: Path, disk: Path) -> None:
    filler = disk / "someone-elses-file"

    def fill_the_disk_after_the_first_save(event):
        events(event)
        if isinstance(event, Saved) and event.step == 1:
            with filler.open("wb") as handle, pytest.raises(OSError):
                while True:
                    handle.write(bytes(1 << 20))
                    handle.flush()

    events = EventLog()
    args = demo_args(demo, images, disk, max_train_steps=2, save_every_n_steps=1, save_state=True)
    result = train(args, fill_the_disk_after_the_first_save)

    lora, state = step_save(disk, 1)
    failed = events[-1]
    assert not result.ok and isinstance(failed, Failed)
    assert failed.message == (f"The disk is full: {disk / 'demo.safetensors'} could not be written; free some space "
                              "on it or choose another output folder.")
    assert_one_sentence(failed.message)
    assert failed.advice == f"The newest save is {lora}; the run can be continued from {state}."
    assert result.resume_state == str(state)
    assert set(check_outputs_whole(disk)) == {lora.name, state.name}
    assert temporary_leftovers(disk) == []

    filler.unlink()  # the user frees some space
    resume_and_finish(args, state)
