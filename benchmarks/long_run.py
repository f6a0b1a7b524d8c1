"""The demo trained for hundreds of epochs with frequent saves, samples and states: does memory grow, do file
handles leak, and does the output folder hold exactly the files the settings ask for?

    python -m benchmarks.long_run [--epochs 300] [--save-every 5] [--keep 3] [--sample-every 25] [--probe-every 50]
                                  [--threads 1] [--rss-bound-mb 20] [--output DIR] [--demo DIR]

The model and images are the demo's (`sd_scripts.demo.build_demo` in build/demo, as `--demo` builds them), the
settings the demo run's (`wizard.runner.demo_config`) with the length, the saves (every few epochs, the newest few
kept, each with its resumable state) and the samples changed; the settings JSON is saved beside the outputs as the
demo saves it, and the tag list (written once by the wizard before training) is left out: the trainer is what runs
long. The images get one repeat instead of ten, so an epoch
is 5 steps and hundreds of epochs take minutes on a CPU. Every `--probe-every` steps the trainer's Step event
records the process's RSS (and on CUDA the allocator's allocated and reserved bytes) and the open file descriptors
(/proc/self/fd, so Linux only). Warm-up ends once every kind of output has been written and the first old save
removed; from then on, at the end:
- RSS has grown by less than `--rss-bound-mb`;
- no file descriptor is open that was not open after warm-up;
- the output folder holds exactly what `expected_outputs` computes from the settings.
It exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from sd_scripts.args import TrainArgs
from sd_scripts.training.outputs import SAMPLE_FOLDER
from sd_scripts.training.state import NETWORK_FILE, OPTIMIZER_FILE, POSITION_FILE, RANDOM_FILE, SCHEDULER_FILE

MB = 1024 * 1024
STATE_FILES = {POSITION_FILE, NETWORK_FILE, OPTIMIZER_FILE, SCHEDULER_FILE, RANDOM_FILE}


@dataclass(frozen=True)
class Expected:
    """What a finished run leaves: the names in the output folder, and (sample label, prompt number) per sample."""

    names: frozenset[str]
    samples: frozenset[tuple[str, int]]
    states: frozenset[str]  # the state folders among `names`; each holds STATE_FILES


def expected_outputs(args: TrainArgs, epochs: int, prompts: int, settings_file: str | None = None) -> Expected:
    """The files a run of `epochs` epochs with `args` leaves in its output folder, as sd-scripts would leave them.

    The final LoRA; after every `save_every_n_epochs` epochs (not the last: the final file is that save) one file,
    of which only the newest `save_last_n_epochs` stay; with `save_state`, a `-state` folder beside each LoRA that
    stays (sd-scripts removes old states with their saves unless save_last_n_epochs_state says otherwise); the loss
    table and plot; the samples every `sample_every_n_epochs` epochs, one per prompt; and the settings file.
    """
    name, extension = args.output_name, args.save_model_as
    every, keep = args.save_every_n_epochs, args.save_last_n_epochs
    saved = [epoch for epoch in range(1, epochs) if every and epoch % every == 0]
    loras = [f"{name}-{epoch:06d}.{extension}" for epoch in (saved[-keep:] if keep else saved)]
    loras.append(f"{name}.{extension}")
    states = {f"{Path(lora).stem}-state" for lora in loras} if args.save_state else set()
    names = {*loras, *states, f"{name}-loss.csv", f"{name}-loss.png"}
    samples: set[tuple[str, int]] = set()
    if args.sample_prompts and args.sample_every_n_epochs:
        samples = {(f"e{epoch:06d}", index) for epoch in range(1, epochs + 1)
                   if epoch % args.sample_every_n_epochs == 0 for index in range(prompts)}
    if samples:
        names.add(SAMPLE_FOLDER)
    if settings_file:
        names.add(settings_file)
    return Expected(frozenset(names), frozenset(samples), frozenset(states))


def found_outputs(folder: Path, name: str) -> Expected:
    """What the output folder holds, in the terms of `expected_outputs`; a sample of another name counts as a file."""
    names = frozenset(path.name for path in folder.iterdir())
    samples: set[tuple[str, int]] = set()
    pattern = re.compile(rf"{re.escape(name)}_\d{{14}}_(\w+?)_(\d+)_\d+\.png")
    for path in (folder / SAMPLE_FOLDER).iterdir() if (folder / SAMPLE_FOLDER).is_dir() else ():
        match = pattern.fullmatch(path.name)
        samples.add((match[1], int(match[2])) if match else (path.name, -1))
    states = frozenset(entry for entry in names if (folder / entry).is_dir() and entry.endswith("-state"))
    return Expected(names, frozenset(samples), states)


def output_differences(folder: Path, name: str, expected: Expected) -> list[str]:
    """One line per difference between the folder and `expected`; empty when it holds exactly what it should."""
    found = found_outputs(folder, name)
    problems = [f"missing: {entry}" for entry in sorted(expected.names - found.names)]
    problems += [f"not asked for: {entry}" for entry in sorted(found.names - expected.names)]
    problems += [f"sample missing: {label} prompt {index}" for label, index in sorted(expected.samples - found.samples)]
    problems += [f"sample not asked for: {label} prompt {index}"
                 for label, index in sorted(found.samples - expected.samples)]
    for state in sorted(found.states & expected.states):
        held = {path.name for path in (folder / state).iterdir()}
        if held != STATE_FILES:
            problems.append(f"{state} holds {sorted(held)}, not {sorted(STATE_FILES)}")
    return problems


@dataclass
class Probe:
    """Memory and open files every `every` steps, from the trainer's Step events."""

    every: int
    rows: list[tuple[int, float, int, float, float]] = field(default_factory=list)  # step, RSS MB, fds, CUDA MB x2

    def __call__(self, event) -> None:
        from sd_scripts.events import Step

        if isinstance(event, Step) and event.step % self.every == 0:
            self.rows.append((event.step, psutil.Process().memory_info().rss / MB, open_descriptors(),
                              *cuda_megabytes()))


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def cuda_megabytes() -> tuple[float, float]:
    """(allocated, reserved) by torch's CUDA allocator; zeros without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return 0.0, 0.0
    return torch.cuda.memory_allocated() / MB, torch.cuda.memory_reserved() / MB


def one_repeat_images(images: Path, folder: Path) -> Path:
    """The demo's `N_name` image folders copied as `1_name`: an epoch of 10 images, 5 steps at batch 2."""
    for subset in images.iterdir():
        shutil.copytree(subset, folder / f"1_{subset.name.split('_', 1)[1]}")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--save-every", type=int, default=5, help="save_every_n_epochs")
    parser.add_argument("--keep", type=int, default=3, help="save_last_n_epochs")
    parser.add_argument("--sample-every", type=int, default=25, help="sample_every_n_epochs")
    parser.add_argument("--probe-every", type=int, default=50, help="steps between two memory probes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    # Measured: +3 MB from warm-up to the end of 1000 steps (+2.6 MB over 30 steps): 20 MB leaves room for the
    # allocator's noise and still catches a leak of 25 KB per step over the default 1500 steps.
    parser.add_argument("--rss-bound-mb", type=float, default=20.0, help="the RSS growth allowed after warm-up")
    parser.add_argument("--output", help="the run's folder (kept); default: a temporary one, removed at the end")
    parser.add_argument("--demo", help="where the demo is built (default: build/demo, where --demo builds it)")
    options = parser.parse_args(argv)

    import torch

    from sd_scripts.demo import build_demo
    from sd_scripts.train import train
    from wizard.formats import seed_json
    from wizard.runner import DEMO_BUILD_FOLDER, demo_config
    from wizard.translate import to_train_args

    torch.set_num_threads(options.threads)
    demo = build_demo(options.demo or DEMO_BUILD_FOLDER)
    work = Path(tempfile.mkdtemp(prefix="long-run-"))
    output = Path(options.output) if options.output else work / "output"
    output.mkdir(parents=True, exist_ok=True)
    config = demo_config(demo, output)
    for name, value in {"img_folder": str(one_repeat_images(demo.images, work / "images")),
                        "num_epochs": options.epochs, "save_every_n_epochs": options.save_every,
                        "save_last_n_epochs": options.keep, "save_state": True,
                        "sample_every_n_epochs": options.sample_every, "tag_occurrence_txt_file": False,
                        "change_output_name": "long_run"}.items():
        config.set(name, value)
    settings = seed_json.save(config, output, name="long_run")
    args = to_train_args(config)
    prompts = sum(1 for line in Path(args.sample_prompts).read_text(encoding="utf-8").splitlines() if line.strip())
    probe = Probe(options.probe_every)

    print(f"{options.epochs} epochs, saves every {options.save_every} (newest {options.keep} kept, with states), "
          f"samples every {options.sample_every}, {options.threads} torch thread(s), into {output}")
    started = time.monotonic()
    result = train(args, on_event=probe)
    seconds = time.monotonic() - started
    if not result.ok:
        print(f"The run failed: {result.message}", file=sys.stderr)
        return 1

    steps_per_epoch = result.steps // options.epochs
    warmup_steps = max(options.sample_every, options.save_every * (options.keep + 1)) * steps_per_epoch
    after_warmup = [row for row in probe.rows if row[0] > warmup_steps]
    if len(after_warmup) < 2:
        print("Too few probes after warm-up: train longer or probe more often.", file=sys.stderr)
        return 1
    (_, rss_base, fds_base, *_), (_, rss_end, fds_end, cuda_allocated, cuda_reserved) = after_warmup[0], \
        after_warmup[-1]
    growth = rss_end - rss_base
    print(f"{result.steps} steps in {seconds:.0f} s; probes every {options.probe_every} steps, warm-up "
          f"{warmup_steps} steps")
    print(f"RSS: first probe {probe.rows[0][1]:.0f} MB, after warm-up {rss_base:.0f} MB, end {rss_end:.0f} MB "
          f"(growth {growth:+.1f} MB), max {max(row[1] for row in probe.rows):.0f} MB")
    print(f"open file descriptors: first probe {probe.rows[0][2]}, after warm-up {fds_base}, end {fds_end}, "
          f"max {max(row[2] for row in probe.rows)}")
    if torch.cuda.is_available():
        print(f"CUDA allocator at the end: {cuda_allocated:.0f} MB allocated, {cuda_reserved:.0f} MB reserved; "
              f"max allocated {torch.cuda.max_memory_allocated() / MB:.0f} MB")
    problems = [] if growth < options.rss_bound_mb else [
        f"RSS grew by {growth:.1f} MB after warm-up (bound {options.rss_bound_mb:.0f} MB)"]
    if fds_end > fds_base:
        problems.append(f"{fds_end - fds_base} more file descriptors open at the end than after warm-up")
    expected = expected_outputs(args, options.epochs, prompts, settings.name)
    problems += output_differences(output, args.output_name, expected)
    print(f"output folder: {len(expected.names)} entries, {len(expected.samples)} samples, "
          f"{len(expected.states)} states expected")
    for problem in problems:
        print(f"FAILED: {problem}")
    shutil.rmtree(work)  # the images copy, and the output unless --output named a folder of its own
    print("all checks passed" if not problems else f"{len(problems)} check(s) failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
