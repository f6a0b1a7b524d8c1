"""Faults that take a whole process (issue 13, item 2): the trainer killed (SIGKILL) in the middle of a save, and the
display of the progress window lost while it trains. Each runs the product in a process of its own."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from fault_checks import check_outputs_whole, resume_and_finish, temporary_leftovers
from sd_scripts.args import TrainArgs
from test_train_fixtures import demo_args, one_repeat_images  # noqa: F401 (fixture)
from xvfb import VirtualDisplay, require_display_tools

REPOSITORY = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 300


def command_line(args: TrainArgs) -> list[str]:
    """`python -m sd_scripts.train` with every setting of `args` that is not the default, under its kohya name."""
    options, defaults = [], TrainArgs()
    for field in dataclasses.fields(TrainArgs):
        value = getattr(args, field.name)
        if value != getattr(defaults, field.name):
            assert isinstance(value, (str, int, float)), f"{field.name}={value!r} has no command-line form here"
            options += [f"--{field.name}"] + ([] if value is True else [str(value)])
    return [sys.executable, "-m", "sd_scripts.train", *options]


# --- killed while saving ------------------------------------------------------------------------------------------
IN_CREATE = 0x100  # inotify(7)
STATE_BEING_WRITTEN = re.compile(r"\.demo-step(\d{8})-state\.\w+\.tmp")  # saving.atomic's temporary name


def kill_while_the_second_state_is_written(process: subprocess.Popen, folder: Path) -> str:
    """SIGKILL the trainer the moment the temporary folder of step 2's state appears (inotify tells at once): a state
    save half done, while that step's LoRA file is already whole. Returns the temporary folder's name."""
    libc = ctypes.CDLL(None, use_errno=True)
    watch = libc.inotify_init1(os.O_NONBLOCK)
    assert watch >= 0 and libc.inotify_add_watch(watch, bytes(folder), IN_CREATE) >= 0, os.strerror(ctypes.get_errno())
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            if not select.select([watch], [], [], 0.5)[0]:
                continue
            data, offset = os.read(watch, 65536), 0
            while offset < len(data):  # struct inotify_event: wd, mask, cookie, len, then the name
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length
                found = STATE_BEING_WRITTEN.fullmatch(name)
                if found and int(found[1]) == 2:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return name
    finally:
        os.close(watch)
    raise AssertionError(f"The trainer ended (exit {process.returncode}) before step 2's state was begun.")


def test_a_process_killed_while_saving_leaves_whole_files_and_its_last_state_resumes(demo, one_repeat_images,
                                                                                     tmp_path):
    output = tmp_path / "out"
    # dim 32: a state of 9 MB, that takes a while to write and flush
    args = demo_args(demo, one_repeat_images, output, max_train_steps=3, save_every_n_steps=1, save_state=True,
                     network_dim=32, network_alpha=32.0)
    output.mkdir()
    with (tmp_path / "trainer.log").open("w") as log:
        # as many torch threads as the resumed run below gets in this process (test modules set their own), so
        # both sum in the same order and step 2's weights compare within float32 rounding
        threads = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        process = subprocess.Popen(command_line(args), cwd=REPOSITORY, env=threads, stdout=log,
                                   stderr=subprocess.STDOUT)
        interrupted = kill_while_the_second_state_is_written(process, output)
    assert process.returncode == -signal.SIGKILL

    outputs = check_outputs_whole(output)  # every file and state under a final name loads
    assert sorted(name for name in outputs if name.endswith("-state")) == ["demo-step00000001-state"]
    assert temporary_leftovers(output) == [interrupted]  # hidden: nothing offers it as an output
    own_lora = output / "demo-step00000002.safetensors"  # written whole before its state was begun
    written_before = load_file(str(own_lora))

    result, _ = resume_and_finish(args, output / "demo-step00000001-state")
    assert any(interrupted in note for note in result.notes), result.notes  # the leftover was cleaned up
    assert temporary_leftovers(output) == []
    written_again = load_file(str(own_lora))  # the resumed run's own save of that step: the same weights
    assert written_again.keys() == written_before.keys()
    for key in written_before:
        torch.testing.assert_close(written_again[key], written_before[key], rtol=1e-5, atol=1e-7)
    assert {"demo.safetensors", "demo-step00000002-state"} <= check_outputs_whole(output).keys()


# --- the display lost ---------------------------------------------------------------------------------------------
TRAIN_IN_THE_WINDOW = """
import sys
from pathlib import Path
from sd_scripts.demo import DemoPaths
from wizard.askers.tk_asker import TkAsker
from wizard.runner import demo_config, train_config

model, images, prompts, output = map(Path, sys.argv[1:])
config = demo_config(DemoPaths(model, images, prompts), output)
config.set("max_steps", 4)
train_config(config, TkAsker())
print("The program went on after the display was lost.")
"""


def test_the_training_goes_on_in_the_console_when_the_display_is_lost(demo, one_repeat_images, tmp_path):
    require_display_tools()
    display = VirtualDisplay()
    output = tmp_path / "out"
    output.mkdir()
    stderr_path = tmp_path / "stderr.txt"
    try:
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-u", "-c", TRAIN_IN_THE_WINDOW, str(demo.model), str(one_repeat_images),
                 str(demo.prompts), str(output)],
                cwd=REPOSITORY, env={**display.env, "PYTHONPATH": str(REPOSITORY)}, stdout=subprocess.PIPE,
                stderr=stderr, text=True)
            shown = [process.stdout.readline()]
            while not shown[-1].startswith("Training on") and shown[-1]:
                shown.append(process.stdout.readline())
            assert shown[-1].startswith("Training on"), shown
    finally:
        display.stop()  # the display goes away while the progress window shows the run
    try:
        rest, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        process.kill()
    errors = stderr_path.read_text()

    assert process.returncode == 0, rest + errors
    assert "Traceback" not in rest + errors and "X connection" not in errors, rest + errors
    lost_at = errors.index("The connection to the display was lost; the training goes on, and its progress shows here.")
    assert "4/4" in errors[lost_at:]  # the progress bar went on in the console to the last step
    lora = output / "demo_lora.safetensors"
    assert f"Finished after 4 steps: {lora}" in rest
    assert f"The training finished after 4 steps; the LoRA is {lora}." in rest
    assert load_file(str(lora))
    assert "The program went on" not in rest  # it ends with the training: the wizard's popups have no screen
