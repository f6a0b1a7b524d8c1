"""Several processes through accelerate (issue 14 item 4): data-parallel training of one LoRA.

sd-scripts hands each process whole batches: accelerate shards its DataLoader (one item = one batch) round robin,
and a step is one batch on every process, its gradients averaged. So N processes with batch B make, step for step,
what one process makes with the same batch and gradient accumulation N: the same N*B images per step (twice the
batch for two processes), the same optimizer steps. The test trains the demo both ways and compares the LoRAs.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import BatchSampler

from sd_scripts.dataset.epochs import process_rounds
from sd_scripts.training.length import plan_run_length
from tests.test_train_fixtures import one_repeat_images  # noqa: F401 - a fixture
from wizard.config import TrainConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]


# --- the share of each process ------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_processes", [1, 2, 3, 4])
def test_each_process_takes_the_batches_accelerate_gives_it_from_sd_scripts_dataloader(num_processes):
    """sd-scripts' DataLoader of whole batches, prepared by accelerate (BatchSamplerShard, even_batches): the batches
    each process gets, for epochs of 1 to 9 batches, are those `process_rounds` deals it."""
    from accelerate.data_loader import BatchSamplerShard

    for batches in range(1, 10):
        rounds = process_rounds([f"batch {index}" for index in range(batches)], num_processes)
        for process in range(num_processes):
            shard = BatchSamplerShard(BatchSampler(range(batches), batch_size=1, drop_last=False),
                                      num_processes=num_processes, process_index=process, even_batches=True)
            expected = [f"batch {index}" for (index,) in shard]
            assert [batches_of_round[process] for batches_of_round in rounds] == expected
            assert len(rounds) == len(shard)


@pytest.mark.parametrize("accumulation", [1, 2, 3])
def test_steps_per_epoch_are_divided_by_the_processes_as_sd_scripts_counts_them(accumulation):
    """train_network.py: math.ceil(len(train_dataloader) / accelerator.num_processes / gradient_accumulation_steps),
    which is also the number of accumulation groups in a process's share of the epoch."""
    for batches in range(1, 12):
        for processes in (1, 2, 3, 4):
            length = plan_run_length(batches, accumulation, max_train_steps=1, max_train_epochs=2,
                                     num_processes=processes)
            assert length.steps_per_epoch == math.ceil(batches / processes / accumulation)
            assert length.steps_per_epoch == math.ceil(len(process_rounds(list(range(batches)), processes))
                                                       / accumulation)
            assert length.total_steps == 2 * length.steps_per_epoch


# --- two processes against one ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listing(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def _settings(demo, images: Path, output: Path) -> TrainConfig:
    config = TrainConfig(cuda=False)
    for name, value in dict(
        base_model=str(demo.model), img_folder=str(images), output_folder=str(output), change_output_name="multi",
        net_dim=4, alpha=4.0, optimizer_type="SGDNesterov", learning_rate=0.5, scheduler="constant",
        train_resolution=64, buckets=False, batch_size=2, num_epochs=1, mixed_precision="no", cache_latents=True,
        save_precision="float", test_seed=1234, sample_prompts=str(demo.prompts), sample_every_n_epochs=1,
        sample_sampler="ddim",
    ).items():
        config.set(name, value)
    return config


def test_two_processes_train_the_lora_of_one_process_with_twice_the_batch(demo, one_repeat_images,  # noqa: F811
                                                                          tmp_path):
    """`accelerate launch --num_processes 2 popup_main.py --load-json F --no-popups` on two CPU processes (gloo):
    8 images, batch 2, one epoch. As sd-scripts counts it that is ceil(4 batches / 2 processes) = 2 steps of 2 x 2
    images. One process with the same settings and gradient accumulation 2 (4 images a step) trains the same LoRA,
    to float rounding: every weight within 1e-4 of the largest weight (measured: about 1e-5). It trains with one
    thread, as torchrun gives each process (on this tiny model a thread count alone changes a weight by a few
    percent), and with SGD, whose step is linear in the gradient (Adam divides rounding-sized gradients by their own
    size). Only the main process writes: the output folder holds the one set of files a single run makes (LoRA, tag
    list, loss table and plot, the samples), and the console shows one progress report."""
    from wizard.formats import seed_json
    from wizard.runner import train_config

    images = tmp_path / "images" / "1_shapes"
    images.mkdir(parents=True)
    for picture in sorted(next(one_repeat_images.iterdir()).iterdir())[:16]:  # 8 images and their captions
        shutil.copy(picture, images)
    together, alone = tmp_path / "two processes", tmp_path / "one process"
    together.mkdir(), alone.mkdir()
    settings = seed_json.save(_settings(demo, images.parent, together), tmp_path, name="multi")

    environment = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    environment.pop("DISPLAY", None)  # no popup may open: the other process must stay silent, the main one asks nothing
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", str(_free_port()),
         str(PROJECT_ROOT / "popup_main.py"), "--load-json", str(settings), "--no-popups"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    output = launched.stdout + launched.stderr
    assert output.count("Training on 2 processes, the main one on cpu") == 1, output[-3000:]
    assert "2 steps in 1 epochs (8 training images" in output

    config = _settings(demo, images.parent, alone)
    config.set("gradient_acc_steps", 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_config(config).ok
    finally:
        torch.set_num_threads(threads)

    files, single_run_files = _listing(together), _listing(alone)
    assert len(files) == len(single_run_files), (files, single_run_files)
    assert [name for name in files if "sample" not in name] == [name for name in single_run_files
                                                                 if "sample" not in name]
    assert "multi.safetensors" in files and len([name for name in files if name.endswith(".png")]) == 3, files

    lora_together, lora_alone = load_file(together / "multi.safetensors"), load_file(alone / "multi.safetensors")
    assert lora_together.keys() == lora_alone.keys()
    weights = [key for key in lora_alone if not key.endswith(".alpha")]
    scale = max(lora_alone[key].abs().max().item() for key in weights)
    difference = max((lora_together[key] - lora_alone[key]).abs().max().item() for key in weights)
    assert difference < 1e-4 * scale, (difference, scale)
    assert any(lora_alone[key].abs().sum() > 0 for key in lora_alone if "lora_up" in key)  # it trained

    with safe_open(str(together / "multi.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_steps"] == "2" and metadata["ss_total_batch_size"] == "4"
    assert metadata["ss_num_batches_per_epoch"] == "2"  # sd-scripts: len(train_dataloader) once accelerate shards it


def _main_worker(marker: str) -> int | None:
    """The pid of the launched process of rank 0 (torchrun's RANK) whose environment holds `marker`; None if none."""
    for entry in Path("/proc").iterdir():
        try:
            environment = (entry / "environ").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if b"RANK=0" in environment and marker.encode() in environment:
            return int(entry.name)
    return None


@pytest.mark.skipif(sys.platform != "linux", reason="finds the main process through /proc")
def test_ctrl_c_in_the_main_process_stops_both_processes_at_the_same_step(demo, one_repeat_images,  # noqa: F811
                                                                          tmp_path):
    """Stop (the progress window's button, or Ctrl+C, in the main process) reaches the other process through the
    votes carried by each step's all-reduce (sd_scripts/training/data_parallel.py): both stop at the same step, a
    step or two after the press, the main one saves the LoRA so far with its state, and both end cleanly. Were they
    to stop at different steps, the one left would wait in its next all-reduce and the launch would not end.
    DyLoRA with two blocks of ranks: its gradients differ between the processes (the random subsets' path)."""
    from wizard.formats import seed_json

    images = tmp_path / "images" / "1_shapes"
    images.mkdir(parents=True)
    for picture in sorted(next(one_repeat_images.iterdir()).iterdir())[:16]:  # 8 images and their captions
        shutil.copy(picture, images)
    output = tmp_path / "out"
    output.mkdir()
    config = _settings(demo, images.parent, output)
    for name, value in dict(network_type="DyLoRA", unit=2, conv_dim=None, num_epochs=200, sample_prompts=None).items():
        config.set(name, value)
    settings = seed_json.save(config, tmp_path, name="stopped")

    environment = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), PYTHONUNBUFFERED="1")
    environment.pop("DISPLAY", None)
    log = tmp_path / "launch.log"
    marker = f"WIZARD_TEST_LAUNCH={tmp_path}"  # the workers inherit it: how the main one is found
    with log.open("w") as written:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
             "--main_process_port", str(_free_port()),
             str(PROJECT_ROOT / "popup_main.py"), "--load-json", str(settings), "--no-popups"],
            cwd=tmp_path, env={**environment, "WIZARD_TEST_LAUNCH": marker.partition("=")[2]}, stdout=written,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 240
        while "Training on 2 processes" not in log.read_text():
            assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        os.kill(_main_worker(marker), signal.SIGINT)
        assert launcher.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    printed = log.read_text()
    stopped = re.search(r"The training was stopped at step (\d+) of (\d+)", printed)
    assert stopped, printed[-3000:]
    step, total = int(stopped[1]), int(stopped[2])
    assert total == 400 and 2 <= step < total, printed[-3000:]
    saved = output / f"multi-step{step:08d}.safetensors"
    assert saved.is_file() and (output / f"multi-step{step:08d}-state").is_dir(), _listing(output)
    with safe_open(str(saved), framework="pt") as handle:
        assert handle.metadata()["ss_steps"] == str(step)
