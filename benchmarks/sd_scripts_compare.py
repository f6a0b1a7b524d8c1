"""Our trainer against kohya-ss/sd-scripts on the same machine, the same file and the same settings (issue 14).

    python benchmarks/sd_scripts_setup.py --mirror PATH_TO_A_CLONE_OF_SD_SCRIPTS --into DIR   # once
    python benchmarks/sd_scripts_compare.py --env DIR

Both train a LoRA (dim 4, AdamW, fp32, SDPA attention, cached latents, batch 1, no data-loader workers) on one
single file of random weights with SD1.5's real shapes (written once, by `sd_scripts.bench.random_checkpoint`) and one
folder of random images at the resolution, each run in its own process, ours and theirs taking turns for `--rounds`
rounds so that a load that comes and goes on a shared machine falls on both alike. Each run is timed from inside its
process by wrapping the trainer's own functions, the same way on both sides:
- load: our `load_base_model` / their `NetworkTrainer.load_target_model`;
- latent caching per image: our `cache_latents` / their `DatasetGroup.new_cache_latents`, divided by the images;
- s/step: the time between the starts of consecutive steps (our `TrainingSession.optimizer_step`, their
  `NetworkTrainer.process_batch`), the first step (the warm-up) left out; the median of the run's steps;
- peak RSS: the process's peak resident memory (`ru_maxrss`), the whole run.
It prints every run, then the medians over the rounds and the medians of the per-round ratios theirs / ours (above
1: ours is faster or smaller), ours / ours-bf16, theirs / ours-bf16 and theirs-bf16 / ours-bf16, and the machine's load
average before and after.

sd-scripts needs its own environment (its pinned transformers, diffusers and accelerate are older than ours), which
benchmarks/sd_scripts_setup.py makes (its docstring says how); its tokenizer is given from our shipped CLIP files
through `--tokenizer_cache_dir`, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK = "PHASES "  # the line an inner run prints its timings on
SIDES = {"ours": ("ours", "no"), "theirs": ("theirs", "no"), "ours-bf16": ("ours", "bf16"),
         "theirs-bf16": ("theirs", "bf16")}  # trainer, precision
RATIOS = (("theirs", "ours"), ("ours", "ours-bf16"), ("theirs", "ours-bf16"),
          ("theirs-bf16", "ours-bf16"))  # above 1: the denominator is faster or smaller
DEFAULT_ENV = Path(tempfile.gettempdir()) / "sd_scripts_compare_env"  # sd_scripts_setup.py's --into default


# --- inside one run ---------------------------------------------------------------------------------------------
class Phases:
    """What an inner run records: (start, end) of the load and the caching, and the start of every step."""

    def __init__(self) -> None:
        self.load: list[float] = []
        self.cache: list[float] = []
        self.step_starts: list[float] = []

    def timed(self, function, seconds: list[float]):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds.append(time.perf_counter() - started)

        return wrapper

    def stamped(self, function):
        def wrapper(*args, **kwargs):
            self.step_starts.append(time.perf_counter())
            return function(*args, **kwargs)

        return wrapper

    def print(self) -> None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        steps = [later - earlier for earlier, later in zip(self.step_starts, self.step_starts[1:])][1:]
        print(MARK + json.dumps({"load": sum(self.load), "cache": sum(self.cache), "steps": steps, "peak_rss": peak}),
              flush=True)


def run_ours(arguments: list[str]) -> None:
    import sd_scripts.training.loop as loop
    from sd_scripts.train import main

    phases = Phases()
    loop.load_base_model = phases.timed(loop.load_base_model, phases.load)
    loop.cache_latents = phases.timed(loop.cache_latents, phases.cache)
    loop.TrainingSession.optimizer_step = phases.stamped(loop.TrainingSession.optimizer_step)
    if main(arguments) != 0:
        raise SystemExit("our trainer failed")
    phases.print()


def run_theirs(arguments: list[str]) -> None:
    sys.path.insert(0, os.getcwd())  # run in sd-scripts' folder
    import train_network
    from library import train_util

    phases = Phases()
    trainer_class = train_network.NetworkTrainer
    trainer_class.load_target_model = phases.timed(trainer_class.load_target_model, phases.load)
    train_util.DatasetGroup.new_cache_latents = phases.timed(train_util.DatasetGroup.new_cache_latents, phases.cache)
    trainer_class.process_batch = phases.stamped(trainer_class.process_batch)
    parser = train_network.setup_parser()
    args = parser.parse_args(arguments)
    train_util.verify_command_line_training_args(args)
    trainer_class().train(args)
    phases.print()


# --- the side-by-side -------------------------------------------------------------------------------------------
def tokenizer_cache(folder: Path) -> Path:
    """sd-scripts' --tokenizer_cache_dir layout, filled with our shipped CLIP tokenizer files (SD1's)."""
    assets = REPO / "sd_scripts" / "models" / "assets" / "clip_tokenizer"
    target = folder / "openai_clip-vit-large-patch14"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(assets / name, target / name)
    shutil.copyfile(assets / "sd_v1_tokenizer_config.json", target / "tokenizer_config.json")
    return folder


def training_arguments(checkpoint: Path, data: Path, output: Path, tokenizers: Path, settings, precision: str) -> list[str]:
    """The same command line for both trainers (ours reads sd-scripts' argument names)."""
    return [
        "--pretrained_model_name_or_path", str(checkpoint), "--train_data_dir", str(data), "--output_dir", str(output),
        "--output_name", "compare", "--save_model_as", "safetensors", "--caption_extension", ".txt",
        "--resolution", str(settings.resolution), "--train_batch_size", "1", "--max_train_steps",
        str(settings.steps + 2), "--network_module", "networks.lora", "--network_dim", "4", "--network_alpha", "1",
        "--optimizer_type", "AdamW", "--learning_rate", "1e-4", "--lr_scheduler", "constant",
        "--mixed_precision", precision, "--cache_latents", "--sdpa", "--max_data_loader_n_workers", "0",
        "--seed", "0", "--tokenizer_cache_dir", str(tokenizers),
    ]


def run_once(side: str, python: str, cwd: Path, arguments: list[str], threads: int, pythonpath: str) -> dict:
    """One run in its own process; its phase timings, or an error naming the side."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   "PYTHONPATH": pythonpath}
    started = time.perf_counter()
    finished = subprocess.run([python, str(Path(__file__).resolve()), "--inner", side, "--", *arguments], cwd=cwd,
                              env=environment, capture_output=True, text=True)
    lines = [line for line in finished.stdout.splitlines() if line.startswith(MARK)]
    if finished.returncode != 0 or not lines:
        raise SystemExit(f"{side} failed (exit code {finished.returncode}):\n{finished.stderr[-3000:]}")
    phases = json.loads(lines[-1][len(MARK):])
    phases["wall"] = time.perf_counter() - started
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inner", choices=("ours", "theirs"), help=argparse.SUPPRESS)
    parser.add_argument("--env", type=Path, default=DEFAULT_ENV,
                        help="a folder made by benchmarks/sd_scripts_setup.py (its sdscripts, sdscripts-venv and "
                             f"tv_shim give the three options below their defaults); {DEFAULT_ENV} by default")
    parser.add_argument("--sd-scripts", type=Path, help="a work tree of kohya-ss/sd-scripts (ENV/sdscripts)")
    parser.add_argument("--sd-scripts-python",
                        help="the Python of an environment with sd-scripts' requirements "
                             "(ENV/sdscripts-venv/bin/python)")
    parser.add_argument("--sd-scripts-pythonpath",
                        help="PYTHONPATH for sd-scripts' runs, e.g. a folder with a stand-in torchvision (ENV/tv_shim)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run (one warm-up step before them)")
    parser.add_argument("--images", type=int, default=3, help="images in the dataset: the latents cached per run")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both (OMP_NUM_THREADS); on a shared machine more threads than free "
                             "cores stall every parallel region now and then, so 1 by default")
    parser.add_argument("--sides", nargs="+", choices=tuple(SIDES), default=["ours", "theirs"],
                        help="ours-bf16 / theirs-bf16: either trainer with bf16 mixed precision")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sd_scripts_compare")
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    settings = parser.parse_args(argv)
    settings.sd_scripts = settings.sd_scripts or settings.env / "sdscripts"
    settings.sd_scripts_python = settings.sd_scripts_python or str(settings.env / "sdscripts-venv" / "bin" / "python")
    settings.sd_scripts_pythonpath = (settings.sd_scripts_pythonpath if settings.sd_scripts_pythonpath is not None
                                      else str(settings.env / "tv_shim"))
    if settings.inner == "ours":
        run_ours(settings.rest)
        return 0
    if settings.inner == "theirs":
        run_theirs(settings.rest)
        return 0

    sys.path.insert(0, str(REPO))
    from sd_scripts.bench import bench_dataset, random_checkpoint

    checkpoint = random_checkpoint("sd15", settings.work)
    data = settings.work / f"data-{settings.images}-{settings.resolution}"
    if not data.is_dir():
        bench_dataset(data, settings.images, settings.resolution)
        (data / "1_bench").rename(data / "10_bench")  # 10 repeats: every step in one epoch
    tokenizers = tokenizer_cache(settings.work / "tokenizers")
    pythons = {"ours": sys.executable, "theirs": settings.sd_scripts_python}  # by trainer
    folders = {"ours": REPO, "theirs": settings.sd_scripts}
    print(f"load average before: {os.getloadavg()}", flush=True)
    runs: dict[str, list[dict]] = {side: [] for side in settings.sides}
    for round_index in range(settings.rounds):
        for side in settings.sides:
            trainer, precision = SIDES[side]
            with tempfile.TemporaryDirectory(dir=settings.work) as output:
                arguments = training_arguments(checkpoint, data, Path(output), tokenizers, settings, precision)
                run = run_once(trainer, pythons[trainer], folders[trainer], arguments, settings.threads,
                               str(REPO) if trainer == "ours" else settings.sd_scripts_pythonpath)
            runs[side].append(run)
            print(f"round {round_index + 1} {side}: load {run['load']:.2f} s, caching "
                  f"{run['cache'] / settings.images:.2f} s/image, steps {[round(s, 2) for s in run['steps']]} s, "
                  f"peak RSS {run['peak_rss'] / 2**30:.2f} GiB, load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"load average after: {os.getloadavg()}")
    figures = {side: [{
        "load (s)": run["load"],
        "latent caching (s/image)": run["cache"] / settings.images,
        "s/step": statistics.median(run["steps"]),
        "peak RSS (GiB)": run["peak_rss"] / 2**30,
    } for run in side_runs] for side, side_runs in runs.items()}
    ratios = [(top, bottom) for top, bottom in RATIOS if top in figures and bottom in figures]
    # Each ratio is taken within a round (runs minutes apart), then the median over the rounds: it holds better
    # than the ratio of the medians when the machine's load changes between rounds.
    print(f"\nmedians of {settings.rounds} rounds        " + "  ".join(f"{side:>9}" for side in figures)
          + "".join(f"  {top}/{bottom}" for top, bottom in ratios))
    for name in next(iter(figures.values()))[0]:
        medians = [statistics.median(each[name] for each in figures[side]) for side in figures]
        round_ratios = [statistics.median(mine[name] / other[name] for mine, other in zip(figures[top], figures[bottom]))
                        for top, bottom in ratios]
        print(f"{name:<26}" + "  ".join(f"{value:9.2f}" for value in medians)
              + "".join(f"  {ratio:{len(top) + len(bottom) + 1}.2f}" for ratio, (top, bottom) in zip(round_ratios, ratios)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
