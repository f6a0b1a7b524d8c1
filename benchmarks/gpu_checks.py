"""Every GPU figure issue 14 asks for, in one short run: `python -m benchmarks.gpu_checks` on a machine with CUDA.

Each check is one `python -m sd_scripts.bench` process on random weights with the real shapes (SD1.5 at 512 px,
SDXL at 1024 px), bf16, cached latents; the figures are collected from their JSON lines into one table with the
issue's targets, then the pre-flight memory estimate is set beside each measured peak. What it checks:
- speed: SD1.5 LoRA at batch 1 (target >= 20 steps/s) and batch 8 (>= 150 images/s, about 30% of the bf16 peak),
  with PyTorch's SDPA (flash / memory-efficient kernels), beside diffusers' plain attention (what SDPA saves) and the
  channels-last layout at batch 8; as options (run only when named: compiling takes minutes), torch.compile at batch
  8 and with CUDA graphs (dynamo_backend cudagraphs) at batch 1, as the trainer's torch_compile option compiles;
- memory: SD1.5 at batch 1 with gradient checkpointing and AdamW8bit (target <= 6 GB), SD1.5 at batch 1 and 4 with and
  without gradient checkpointing, SDXL with sd-scripts' 8 GB recipe (U-Net only, cached text-encoder outputs, gradient
  checkpointing, AdamW8bit); each against `wizard.memory_estimate` (target: within 20%).
- waits for the GPU: the trainer itself (`sd_scripts.train`) makes 40 steps of the demo model's shapes (random
  weights) in bf16 with cached latents and fused AdamW under torch's sync debug mode, from its first step to its
  final save, and every operation that made the host wait is listed by the line that asked for it (target: only the
  loss read-back, about twice a second, none inside a step).
The environment comes first: torch, CUDA, the GPU, which SDPA kernels are enabled, bitsandbytes.

`--tiny` runs the same list on the demo's tiny shapes at 64 px (CPU or GPU; seconds a check, but minutes for the
compiled ones on a CPU): the test suite runs one check that way, so the script itself is known to work before a GPU
session spends its minutes on it. `--only WORD ...` runs the checks whose names contain one of the words; the
compiled checks run only when named so (`--only compiled`). `bash benchmarks/gpu_session.sh` is the GPU machine's
one command (it installs the wheels that machine's image lacks, then runs this).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from wizard.memory_estimate import GB, SD1, SDXL, LoraShape, TrainingSetup, estimate_training_memory

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Check:
    name: str
    model: str  # sd_scripts.bench --model
    resolution: int
    batch_size: int
    arguments: tuple[str, ...] = ()  # further bench options
    target: str = ""  # the target, as words
    optional: bool = False  # run only when --only names it (compiling takes minutes of the session's GPU time)

    def bench_command(self, tiny: bool, json_log: Path) -> list[str]:
        model = {"sd15": "tiny", "sdxl": "tiny-sdxl"}[self.model] if tiny else self.model
        resolution = 64 if tiny else self.resolution
        steps = ("--steps", "2", "--warmup-steps", "1") if tiny else ("--steps", "20", "--warmup-steps", "5")
        return [sys.executable, "-m", "sd_scripts.bench", "--model", model, "--resolution", str(resolution),
                "--batch-size", str(self.batch_size), "--precision", "bf16", "--cache-latents", "--cache-images", "1",
                "--text-encodings", "1", *steps, *self.arguments, "--json-log", str(json_log)]

    def estimate_gb(self, on_gpu: bool) -> float:
        checkpointing = "--gradient-checkpointing" in self.arguments
        optimizer = self.arguments[self.arguments.index("--optimizer") + 1] if "--optimizer" in self.arguments \
            else "AdamW"
        unet_only = "--unet-only" in self.arguments or "--cache-text-encoder-outputs" in self.arguments
        setup = TrainingSetup(resolution=(self.resolution, self.resolution), batch_size=self.batch_size,
                              mixed_precision="bf16", gradient_checkpointing=checkpointing, cache_latents=True,
                              optimizer=optimizer, lora=LoraShape(dim=4, train_text_encoder=not unet_only),
                              on_gpu=on_gpu,
                              cache_text_encoder_outputs="--cache-text-encoder-outputs" in self.arguments)
        return estimate_training_memory(setup, SDXL if self.model == "sdxl" else SD1).total_gb


CHECKS = (
    Check("SD1.5 batch 1", "sd15", 512, 1, target=">= 20 steps/s"),
    Check("SD1.5 batch 8", "sd15", 512, 8, target=">= 150 images/s"),
    Check("SD1.5 batch 8, plain attention", "sd15", 512, 8, ("--attention", "plain"), target="slower than SDPA"),
    Check("SD1.5 batch 8, channels_last", "sd15", 512, 8, ("--channels-last",), target="faster than NCHW?"),
    Check("SD1.5 batch 8, compiled", "sd15", 512, 8, ("--compile",), target="option", optional=True),
    Check("SD1.5 batch 1, compiled with CUDA graphs", "sd15", 512, 1, ("--compile", "cudagraphs"),
          target=">= 20 steps/s, option", optional=True),
    Check("SD1.5 batch 1, checkpointing, AdamW8bit", "sd15", 512, 1,
          ("--gradient-checkpointing", "--optimizer", "AdamW8bit"), target="<= 6 GB"),
    Check("SD1.5 batch 1, checkpointing", "sd15", 512, 1, ("--gradient-checkpointing",)),
    Check("SD1.5 batch 4", "sd15", 512, 4),
    Check("SD1.5 batch 4, checkpointing", "sd15", 512, 4, ("--gradient-checkpointing",)),
    Check("SDXL batch 1, sd-scripts' 8 GB recipe", "sdxl", 1024, 1,
          ("--gradient-checkpointing", "--optimizer", "AdamW8bit", "--unet-only", "--cache-text-encoder-outputs"),
          target="<= 8 GB"),
)


SYNC_CHECK = "trainer waits for the GPU"
SYNC_CHECK_STEPS = 40


def sync_check_inputs(folder: Path) -> tuple[Path, Path]:
    """The demo model's shapes with random weights in a file, and one folder of 40 plain images (4 images, 10
    repeats: the check's steps fit in one epoch). What makes the host wait does not depend on what is learned, so
    nothing is pre-trained (the GPU session's minutes are few)."""
    from PIL import Image

    from sd_scripts.demo import tiny_sd15_model
    from sd_scripts.models import save_ldm_checkpoint

    model = folder / "tiny_sd15.safetensors"
    save_ldm_checkpoint(tiny_sd15_model(), model, overwrite=True)
    images = folder / "images" / "10_plain"
    images.mkdir(parents=True)
    for index, colour in enumerate(((200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40))):
        Image.new("RGB", (64, 64), colour).save(images / f"{index}.png")
        (images / f"{index}.txt").write_text(f"a plain square, colour {index}", encoding="utf-8")
    return model, images.parent


def trainer_syncs(folder: Path, steps: int = SYNC_CHECK_STEPS) -> str:
    """The table row of the sync check (see the module's docstring); on a CPU there is nothing to wait for.

    The debug mode is on from the Started event to the first Saved event: the steps and the reads of their losses,
    not the loading, caching or saving around them."""
    import torch

    from sd_scripts.args import TrainArgs
    from sd_scripts.events import Saved, Started, Step
    from sd_scripts.train import train

    model, images = sync_check_inputs(folder)
    on_gpu = torch.cuda.is_available()
    reported: list[Step] = []

    def watch(event: object) -> None:
        if isinstance(event, Started) and on_gpu:
            torch.cuda.set_sync_debug_mode("warn")
        elif isinstance(event, Saved) and on_gpu:
            torch.cuda.set_sync_debug_mode("default")
        elif isinstance(event, Step):
            reported.append(event)

    args = TrainArgs(pretrained_model_name_or_path=str(model), train_data_dir=str(images), caption_extension=".txt",
                     resolution="64", output_dir=str(folder / "syncs"), output_name="syncs", network_dim=4,
                     max_train_steps=steps, mixed_precision="bf16", cache_latents=True, optimizer_type="AdamW",
                     seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(args, watch)
    if on_gpu:
        torch.cuda.set_sync_debug_mode("default")
    if not result.ok:
        return f"| {SYNC_CHECK} | failed: {result.message} | | | | only the loss reads |"
    waits = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                                if "synchronizing" in str(w.message))
    listed = ", ".join(f"{where} x{count}" for where, count in waits.most_common()) or "none"
    seconds = reported[-1].elapsed_s if reported else 0.0
    speed = f"{len(reported)} steps in {seconds:.2f} s" + ("" if on_gpu else " (no CUDA: nothing to count)")
    return f"| {SYNC_CHECK} | {speed} | - | {sum(waits.values())} waits: {listed} | - | only the loss reads |"


def environment() -> list[str]:
    """What decides the figures: versions, the GPU, the SDPA kernels torch will choose from, bitsandbytes."""
    import torch

    lines = [f"torch {torch.__version__}, CUDA {torch.version.cuda}"]
    if torch.cuda.is_available():
        lines.append(f"GPU {torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()}")
        lines.append(f"SDPA kernels enabled: flash {torch.backends.cuda.flash_sdp_enabled()}, memory-efficient "
                     f"{torch.backends.cuda.mem_efficient_sdp_enabled()}, cuDNN {torch.backends.cuda.cudnn_sdp_enabled()}")
    else:
        lines.append("no CUDA GPU: the figures below are the CPU's")
    found = importlib.util.find_spec("bitsandbytes") is not None
    lines.append(f"bitsandbytes {'installed' if found else 'missing: the AdamW8bit checks will fail'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny shapes at 64 px, to try the script")
    parser.add_argument("--only", nargs="*", default=None, help="run the checks whose names contain these words")
    options = parser.parse_args(argv)
    print("\n".join(environment()), flush=True)
    checks = [c for c in CHECKS if any(word in c.name for word in options.only)] if options.only \
        else [c for c in CHECKS if not c.optional]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "results.jsonl"
        for check in checks:
            if "AdamW8bit" in check.arguments and importlib.util.find_spec("bitsandbytes") is None:
                rows.append(f"| {check.name} | not run: bitsandbytes is missing | | | | {check.target} |")
                continue
            finished = subprocess.run(check.bench_command(options.tiny, log), cwd=REPO, stdout=subprocess.DEVNULL)
            if finished.returncode != 0:
                rows.append(f"| {check.name} | failed (exit {finished.returncode}) | | | | {check.target} |")
                continue
            result = json.loads(log.read_text(encoding="utf-8").splitlines()[-1])
            measured = result["peak_memory_bytes"] / GB
            estimate = "-"  # the estimate knows the real families' sizes, not the tiny demos'
            if not options.tiny:
                gigabytes = check.estimate_gb(on_gpu=result["device"] != "cpu")
                estimate = f"{gigabytes:.2f} GB ({gigabytes / measured - 1:+.0%})"
            share = f"{result['fraction_of_peak']:.0%}" if result.get("fraction_of_peak") is not None else "-"
            rows.append(f"| {check.name} | {1 / result['seconds_per_step']:.2f} steps/s, "
                        f"{result['images_per_second']:.1f} images/s | {share} | {measured:.2f} GB "
                        f"({result['peak_memory_kind']}) | {estimate} | {check.target} |")
            print(rows[-1], flush=True)
        if not options.only or any(word in SYNC_CHECK for word in options.only):
            steps = 4 if options.tiny else SYNC_CHECK_STEPS
            rows.append(trainer_syncs(Path(folder), steps))
            print(rows[-1], flush=True)
    print("\n| check | speed | share of bf16 peak | peak memory | estimate (error) | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
