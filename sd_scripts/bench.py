"""Benchmark the phases of a LoRA training run: `python -m sd_scripts.bench --model sd15 --resolution 512`.

Phases, each timed on its own with its warm-up excluded, as the trainer runs them:
- load: the base model from a single file, `--checkpoint FILE`, or else a file of random weights with the real shapes
  of `--model` (sd15, sd2 = the shipped SD2 768-v configs with v-prediction, sdxl; tiny and tiny-sdxl = the demos'
  widths) that the benchmark writes once to a temporary folder (in a child process, so the measured peak memory is
  the run's) and loads back, so nothing needs to be downloaded;
- latent caching: `--cache-images` random images in a temporary dataset folder, scanned and encoded by the trainer's
  own `cache_latents` (per bucket, `--batch-size` at a time), in seconds per image;
- text encoding: the caption through the text encoder(s) without gradients, in seconds per caption;
- the step: VAE encode (unless `--cache-latents`), text encoding (unless `--cache-text-encoder-outputs`, which encodes
  once and parks the text encoders in RAM on a GPU, as the trainer does) and the U-Net's loss with the network (U-Net
  and text encoder, or the U-Net only with `--unet-only`; rank `--dim`) applied, backward, optimizer step.
Settings: resolution, batch, precision (no / fp16 / bf16, resolved for this machine as the trainer resolves it),
`--attention` (sdpa, xformers where installed, plain), `--compile [BACKEND]` (torch.compile of the U-Net as the
trainer's torch_compile does it, with its dynamo_backend: inductor, cudagraphs (CUDA graphs), aot_eager, eager; its
compile time is in the warm-up, printed apart),
`--channels-last` (the U-Net and network in the NHWC layout cuDNN prefers for half precision), gradient
checkpointing, `--no-half-vae`.

It prints images/s, the median seconds per step, the peak memory (the CUDA allocator's peak on a GPU, else the
process's peak resident memory, the load included) and on a GPU the fraction of its dense bf16 peak reached, by the
ruler of issue 14: an SD1.5 LoRA step at 512 px with cached latents costs about 1.6 TFLOP per image, scaled by the
resolution squared. Each run appends one JSON line to `--json-log` (default benchmarks/results.jsonl, kept out of
git: the README's "Measured figures" holds the figures worth keeping).

`--network loha dylora ...` measures each network type of the trainer's table (built as training builds it, with
`--network-args` such as preset=attn-mlp given to the types that take them) on one base model, in turn for
`--rounds` rounds, and ends with a table of their medians and their ratio to LoRA (measured too) in the same
round. On a CPU the process's peak memory only grows, so after the first network it is the highest so far.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sd_scripts.args import DYNAMO_BACKENDS
from sd_scripts.networks.kinds import NETWORK_TYPES, NetworkType, parse_network_args
from sd_scripts.notices import quiet_library_notices

MODELS = ("sd15", "sd2", "sdxl", "tiny", "tiny-sdxl")
# "lora", "locon", "lycoris-locon", "loha", "lokr", "ia3", "dylora": the table's names as command-line words
NETWORKS: dict[str, NetworkType] = {kind.name.lower().replace(" ", "-"): kind for kind in NETWORK_TYPES.values()}
BASELINE = "lora"
# The trainer's attention kernels: PyTorch's SDPA (its default), xformers where installed; and diffusers' plain one.
ATTENTIONS = ("sdpa", "plain") + (("xformers",) if importlib.util.find_spec("xformers") else ())
DEFAULT_JSON_LOG = Path(__file__).resolve().parents[1] / "benchmarks" / "results.jsonl"
# Issue 14's ruler: forward plus activation gradients of the SD1.5 U-Net (base weights frozen) at 512 px.
SD15_STEP_FLOP_PER_IMAGE_512 = 1.6e12
# Dense bf16 tensor throughput (TFLOP/s, fp32 accumulate, no sparsity) from the vendors' data sheets, matched in this
# order against torch.cuda.get_device_name() (more specific names first).
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.2),
    ("RTX 3090", 71.0),
)


@dataclass(frozen=True)
class BenchResult:
    model: str
    network: str  # the type's name in the trainer's table, with the options it was built with
    device: str
    resolution: int
    batch_size: int
    precision: str
    gradient_checkpointing: bool
    unet_parameters: int
    lora_parameters: int
    seconds_per_step: float  # median over the timed steps
    images_per_second: float
    peak_memory_bytes: int
    peak_memory_kind: str  # "CUDA allocated" | "process RSS"
    unet_only: bool = False
    cached_text_encoder_outputs: bool = False
    cached_latents: bool = False
    attention: str = "sdpa"
    compile_backend: str | None = None  # torch.compile's backend when compiled
    channels_last: bool = False
    load_seconds: float | None = None  # None: the base model was built in memory (several networks on one model)
    latent_seconds_per_image: float | None = None  # None: no latent caching measured
    text_seconds_per_caption: float | None = None
    warmup_seconds: float = 0.0  # the warm-up steps together (torch.compile's compilation included)
    final_loss: float = math.nan  # the last timed step's loss: finite when the precision trains
    lora_change: float = 0.0  # |trained - initial| / |initial| over the network's weights: above 0 when it learns
    peak_bf16_tflops: float | None = None  # the GPU's, from PEAK_BF16_TFLOPS; None on a CPU or an unknown GPU
    fraction_of_peak: float | None = None  # achieved by the SD1.5 ruler over the peak; SD1 models on known GPUs only
    # Counted by torch's FlopCounterMode in one more step after the timed ones (matrix products, convolutions,
    # attention; not elementwise work)
    step_gflop: float | None = None  # one step, forward and backward; None when compiled (not counted then)
    latent_gflop_per_image: float | None = None  # one VAE encode
    # The same step's operations that compute (views left out): on a GPU each is about one kernel launch, so at small
    # batches, where launching is the limit, fewer is faster
    step_operations: int | None = None
    matmul_tflops: float | None = None  # on a CPU: its own speed at a large matrix product in the run's dtype

    def report(self) -> str:
        lines = [
            f"model {self.model}: U-Net {self.unet_parameters / 1e6:.1f} M parameters, {self.network} "
            f"{self.lora_parameters / 1e6:.2f} M trainable; {self.resolution}x{self.resolution}, "
            f"batch {self.batch_size}, precision {self.precision}, attention {self.attention}"
            f"{f', compiled ({self.compile_backend})' if self.compile_backend else ''}"
            f"{', channels_last' if self.channels_last else ''}, "
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}, "
            f"{'U-Net only' if self.unet_only else 'U-Net and text encoder'}"
            f"{', cached latents' if self.cached_latents else ''}"
            f"{', cached text-encoder outputs' if self.cached_text_encoder_outputs else ''}, device {self.device}",
        ]
        if self.load_seconds is not None:
            lines.append(f"load (s): {self.load_seconds:.2f}")
        if self.latent_seconds_per_image is not None:
            lines.append(f"latent caching (s/image): {self.latent_seconds_per_image:.4f}")
        if self.text_seconds_per_caption is not None:
            lines.append(f"text encoding (s/caption): {self.text_seconds_per_caption:.4f}")
        lines += [
            f"warm-up (s): {self.warmup_seconds:.2f}",
            f"s/step (median): {self.seconds_per_step:.4f}",
            f"images/s: {self.images_per_second:.2f}",
            f"peak memory ({self.peak_memory_kind}): {self.peak_memory_bytes / 2**20:.0f} MiB",
            f"loss: {self.final_loss:.4f}, LoRA weights changed by {self.lora_change:.2e} (relative)",
        ]
        if self.fraction_of_peak is not None:
            lines.append(f"fraction of bf16 peak ({self.peak_bf16_tflops:.0f} TFLOP/s, SD1.5 ruler): "
                         f"{self.fraction_of_peak:.1%}")
        lines += self._counted_work()
        return "\n".join(lines)

    def _counted_work(self) -> list[str]:
        """The counted work and the rate reached, against this CPU's own matrix-product speed where measured."""
        rates = []
        if self.step_gflop is not None:
            rates.append(("step", self.step_gflop, self.step_gflop / self.seconds_per_step))
        if self.latent_gflop_per_image is not None and self.latent_seconds_per_image:
            rates.append(("latent caching, per image", self.latent_gflop_per_image,
                          self.latent_gflop_per_image / self.latent_seconds_per_image))
        lines = [f"counted work, {what}: {gflop:.3g} GFLOP, {rate:.1f} GFLOP/s" + (
            f" ({rate / (self.matmul_tflops * 1e3):.0%} of this CPU's matrix-product speed)" if self.matmul_tflops
            else "") for what, gflop, rate in rates]
        if self.step_operations is not None:
            lines.append(f"operations per step (views left out; about one GPU kernel launch each): "
                         f"{self.step_operations}")
        if self.matmul_tflops:
            lines.append(f"this CPU's matrix-product speed in the run's precision: {self.matmul_tflops * 1e3:.1f} "
                         "GFLOP/s")
        return lines


def random_model(name: str):
    """A BaseModel with random weights: SD1.5's, SD2's (768-v) or SDXL's shipped configs, or the demos' tiny widths."""
    import torch

    from sd_scripts.demo import tiny_sd15_model, tiny_sdxl_model
    from sd_scripts.models import SD_V1, SD_V2_V, SDXL, model_from_shipped_configs

    if name == "tiny":
        return tiny_sd15_model()
    if name == "tiny-sdxl":
        return tiny_sdxl_model()
    torch.manual_seed(0)
    return model_from_shipped_configs({"sd15": SD_V1, "sd2": SD_V2_V, "sdxl": SDXL}[name])


def write_random_checkpoint(model: str, path: str | os.PathLike) -> None:
    """Write `random_model(model)` as a single file (LDM names, as the trainer reads any checkpoint)."""
    from sd_scripts.models import save_ldm_checkpoint

    save_ldm_checkpoint(random_model(model), path, overwrite=True)


def random_checkpoint(model: str, folder: Path | None = None) -> Path:
    """The random-weight single file of `model`, written once (in a child process, which takes its memory with it)."""
    folder = folder or Path(tempfile.gettempdir()) / "sd_scripts_bench"
    path = folder / f"random-{model}.safetensors"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        code = f"from sd_scripts.bench import write_random_checkpoint; write_random_checkpoint({model!r}, {str(path)!r})"
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, "-c", code], check=True, env=environment)
    return path


def bench_dataset(folder: Path, images: int, resolution: int) -> Path:
    """A training folder of `images` random RGB images at the resolution, each with a caption, as users lay them out."""
    import numpy as np
    from PIL import Image

    subset = folder / "1_bench"
    subset.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    for index in range(images):
        pixels = generator.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(subset / f"image_{index}.png")
        (subset / f"image_{index}.txt").write_text("a photo of a cat, masterpiece", encoding="utf-8")
    return folder


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named like `device_name`, or None when the table does not know it."""
    return next((tflops for name, tflops in PEAK_BF16_TFLOPS if name.lower() in device_name.lower()), None)


def counted_work(function: Callable[[], object]) -> tuple[float, int]:
    """The GFLOP of one call's matrix products, convolutions and attention, counted by torch as it runs, and how
    many operations it dispatched that compute (views and other reshapes of the same memory left out)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    operations = 0

    class OperationCounter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            nonlocal operations
            # _unsafe_view is a view that torch does not mark as one (its result is not tracked as an alias)
            if not func.is_view and func.overloadpacket.__name__ != "_unsafe_view":
                operations += 1
            return func(*args, **(kwargs or {}))

    with FlopCounterMode(display=False) as counter, OperationCounter():
        function()
    return counter.get_total_flops() / 1e9, operations


def cpu_matmul_tflops(dtype, side: int = 2048, repeats: int = 3) -> float:
    """This CPU's speed at a large square matrix product in `dtype` with torch's threads: the practical peak that
    the counted work of a step is measured against (the best of a few products)."""
    import torch

    a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
    a @ b
    fastest = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        fastest = min(fastest, time.perf_counter() - started)
    return 2 * side**3 / fastest / 1e12


def sd15_ruler_tflops(resolution: int, batch_size: int, seconds_per_step: float) -> float:
    """The TFLOP/s a step achieves by the SD1.5 ruler: 1.6 TFLOP per image at 512 px, times (resolution / 512)^2."""
    return SD15_STEP_FLOP_PER_IMAGE_512 * (resolution / 512) ** 2 * batch_size / seconds_per_step / 1e12


def append_json_line(path: Path, result: BenchResult, argv: Sequence[str] | None) -> None:
    """One JSON object per run: the result, the machine and the versions, so a log file compares runs later."""
    import torch

    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **dataclasses.asdict(result),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "command": "python -m sd_scripts.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, allow_nan=True) + "\n")


def _cpu_name() -> str:
    """The CPU's model name where Linux states it, else what the platform module knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor()


def network_spec(network: str, *, dim: int = 4, alpha: float = 1.0, network_args: Sequence[str] = (),
                 unet_only: bool = False):
    """The NetworkSpec of a type named on the command line, with the `network_args` that type takes.

    LoCon needs conv_dim; it gets the network's rank, so every type is measured at the same rank.
    """
    from sd_scripts.networks.base import NetworkSpec

    kind = NETWORKS[network]
    args = [arg for arg in network_args if kind.takes(arg.partition("=")[0].strip()) and not arg.startswith("algo")]
    if kind.algo is not None:
        args.append(f"algo={kind.algo}")
    if "conv_dim" in kind.required and not any(arg.startswith("conv_dim") for arg in args):
        args.append(f"conv_dim={dim}")
    return NetworkSpec(kind=kind, dim=dim, alpha=alpha, options=parse_network_args(kind.module, args),
                       train_text_encoder=not unet_only)


def describe_network(spec) -> str:
    """"LoHa (preset=attn-mlp)": the type and the options it was built with, for the report."""
    shown = ", ".join(f"{key}={value}" for key, value in spec.options.items() if key != "algo")
    return f"{spec.kind.name} ({shown})" if shown else spec.kind.name


def run_benchmark(
    *,
    model: str = "sd15",
    checkpoint: str | os.PathLike | None = None,
    network: str = BASELINE,
    network_args: Sequence[str] = (),
    dim: int = 4,
    resolution: int = 512,
    batch_size: int = 1,
    steps: int = 10,
    warmup_steps: int = 2,
    precision: str = "no",
    attention: str = "sdpa",
    compile_backend: str | None = None,
    channels_last: bool = False,
    gradient_checkpointing: bool = False,
    cache_latents: bool = False,
    cache_images: int = 0,
    text_encodings: int = 0,
    optimizer: str = "AdamW",
    unet_only: bool = False,
    cache_text_encoder_outputs: bool = False,
    no_half_vae: bool = False,
    base=None,
) -> BenchResult:
    """Time the phases of one run; `base` reuses a model already in memory (then no load is timed), else the
    model is loaded from `checkpoint` or from `model`'s random single file. `cache_images` and `text_encodings`
    are how many images and captions the caching and text-encoding phases time (0: not measured)."""
    import torch

    from sd_scripts.dataset.latent_cache import cache_latents as cache_dataset_latents
    from sd_scripts.dataset.plan import scan_dataset
    from sd_scripts.dataset.settings import DatasetSettings
    from sd_scripts.models import SD_V1, load_base_model
    from sd_scripts.models.text_encoding import encode_sdxl_tokens, encode_tokens, sdxl_time_ids, tokenize
    from sd_scripts.networks.factory import create_network
    from sd_scripts.optimizer_kinds import resolve_optimizer
    from sd_scripts.training.compilation import compiled_unet
    from sd_scripts.training.noise import make_noise_scheduler
    from sd_scripts.training.optimizers import build_optimizer
    from sd_scripts.training.precision import (
        WEIGHT_DTYPES,
        configure_attention,
        create_accelerator,
        enable_gradient_checkpointing,
        freeze_base_model,
        network_cast_dtype,
        reset_accelerate_state,
        resolve_mixed_precision,
    )
    from sd_scripts.training.step import NoiseSettings, unet_loss

    precision, notes = resolve_mixed_precision(precision, torch.cuda.is_available())
    for note in notes:
        print(note, file=sys.stderr)
    accelerator = create_accelerator(precision)
    device, dtype = accelerator.device, WEIGHT_DTYPES[precision]
    vae_dtype = torch.float32 if no_half_vae else dtype
    load_seconds = None
    if base is None:
        path = Path(checkpoint) if checkpoint else random_checkpoint(model)
        started = time.perf_counter()
        base = load_base_model(path, dtype=dtype, vae_dtype=vae_dtype)
        load_seconds = time.perf_counter() - started
    unet_only = unet_only or cache_text_encoder_outputs  # cached outputs cannot follow a trained text encoder
    spec = network_spec(network, dim=dim, network_args=network_args, unet_only=unet_only)
    network_object = create_network(spec, base.text_encoders if base.is_sdxl else base.text_encoder, base.unet)
    network_object.apply_to()
    network_object.train()  # DyLoRA's random rank acts in training mode, as in the trainer
    freeze_base_model((base.unet, *base.text_encoders), device, dtype)
    freeze_base_model((base.vae,), device, vae_dtype)
    network_object.to(device, dtype=torch.float32)
    if channels_last:
        base.unet.to(memory_format=torch.channels_last)
        network_object.to(memory_format=torch.channels_last)
    for note in configure_attention(base.unet, base.vae, xformers=attention == "xformers", on_cuda=device.type == "cuda"):
        print(note, file=sys.stderr)
    if attention == "plain":
        from diffusers.models.attention_processor import AttnProcessor

        base.unet.set_attn_processor(AttnProcessor())
        base.vae.set_attn_processor(AttnProcessor())
    if gradient_checkpointing:
        enable_gradient_checkpointing(base.unet, base.text_encoders, text_encoder_trained=not unet_only)
    groups = network_object.prepare_optimizer_params(1e-4, 1e-4, 1e-4)
    built = build_optimizer(resolve_optimizer(optimizer), groups, 1e-4, {})
    _, optimizer_object = accelerator.prepare(network_object, built.optimizer)
    parameters = [p for group in groups for p in group["params"]]
    initial = torch.cat([p.detach().flatten().float().cpu() for p in parameters])
    unet = compiled_unet(base.unet, compile_backend) if compile_backend else base.unet

    scheduler = make_noise_scheduler(v_parameterization=base.v_parameterization)
    noise_settings = NoiseSettings(v_parameterization=base.v_parameterization)
    generator = torch.Generator("cpu").manual_seed(0)
    latent_size = resolution // 8
    pixels = torch.rand(batch_size, 3, resolution, resolution, generator=generator) * 2 - 1
    cached = torch.randn(batch_size, 4, latent_size, latent_size, generator=generator)
    captions = ["a photo of a cat, masterpiece"] * batch_size
    ids = tokenize(base.tokenizer, captions, None, base.v2).to(device)
    ids_2 = tokenize(base.tokenizer_2, captions, None, True).to(device) if base.is_sdxl else None
    sizes = torch.tensor([[resolution, resolution]] * batch_size)
    time_ids = sdxl_time_ids(sizes, torch.zeros_like(sizes), sizes).to(device, torch.float32)
    weights = torch.ones(batch_size)

    @torch.no_grad()
    def encode_pixels(images: torch.Tensor) -> torch.Tensor:
        """The trainer's latent encoder (TrainingSession.encode_pixels): a sample of the latent distribution."""
        return base.vae.encode(images.to(device, dtype=vae_dtype)).latent_dist.sample()

    def conditioning(trained: bool):
        """The context, and SDXL's added conditioning, as the trainer's encode_captions / sdxl_conditioning."""
        with torch.set_grad_enabled(trained), accelerator.autocast():
            if not base.is_sdxl:
                return encode_tokens(base.text_encoder, ids, clip_skip=None, max_token_length=None, v2=base.v2), None
            context, pooled = encode_sdxl_tokens(base.text_encoder, base.text_encoder_2, ids, ids_2,
                                                 max_token_length=None)
        return context, {"text_embeds": pooled, "time_ids": time_ids}

    latent_seconds = None
    if cache_images:
        encode_pixels(pixels)  # warm-up: oneDNN / cuDNN pick their kernels for this shape once
        with tempfile.TemporaryDirectory(prefix="sd_scripts_bench_") as folder:
            plan = scan_dataset(DatasetSettings(
                train_data_dir=str(bench_dataset(Path(folder), cache_images, resolution)), caption_extension=".txt",
                resolution=(resolution, resolution), train_batch_size=batch_size, seed=0,
            ))
            started = time.perf_counter()
            cache_dataset_latents(plan, encode_pixels, to_disk=False, vae_batch_size=batch_size)
            latent_seconds = (time.perf_counter() - started) / cache_images
    text_seconds = None
    if text_encodings:
        conditioning(False)
        durations = []
        for _ in range(text_encodings):
            started = time.perf_counter()
            conditioning(False)
            durations.append(time.perf_counter() - started)
        text_seconds = statistics.median(durations) / batch_size

    if cache_text_encoder_outputs:
        cached_conditioning = conditioning(False)
    # On a GPU the trainer keeps in RAM what the steps no longer use: the VAE with cached latents, the text
    # encoders with cached outputs.
    if device.type == "cuda":
        parked = ([base.vae] if cache_latents else []) + (base.text_encoders if cache_text_encoder_outputs else [])
        for module in parked:
            module.to("cpu")
        torch.cuda.empty_cache()

    def one_step() -> torch.Tensor:
        if cache_latents:
            latents = cached.to(device, dtype=dtype)
        else:
            latents = encode_pixels(pixels).to(dtype)
        latents = latents * base.vae.config.scaling_factor
        with network_object.weights_cast_once(network_cast_dtype(precision, compiled=bool(compile_backend))):
            context, added = cached_conditioning if cache_text_encoder_outputs else conditioning(not unet_only)
            loss = unet_loss(unet, scheduler, latents, context, weights, generator, noise_settings,
                             accelerator.autocast, added)
            accelerator.backward(loss)
        accelerator.clip_grad_norm_(parameters, 1.0)
        optimizer_object.step()
        optimizer_object.zero_grad(set_to_none=True)
        return loss.detach()

    def timed_steps(count: int) -> tuple[list[float], float]:
        """Each step's seconds and the last loss. On a GPU the host does not wait for a step, as in training (the
        trainer reads the losses back every so often): CUDA events between the steps time them, read after one
        wait at the end. On a CPU the steps are timed by the clock, the loss read after each."""
        if device.type != "cuda":
            durations = []
            for _ in range(count):
                started = time.perf_counter()
                loss = one_step().item()
                durations.append(time.perf_counter() - started)
            return durations, loss
        marks = [torch.cuda.Event(enable_timing=True) for _ in range(count + 1)]
        marks[0].record()
        for mark in marks[1:]:
            last = one_step()
            mark.record()
        marks[-1].synchronize()
        return [start.elapsed_time(end) / 1000 for start, end in zip(marks, marks[1:])], last.item()

    try:
        started = time.perf_counter()
        if warmup_steps:
            timed_steps(warmup_steps)
        warmup_seconds = time.perf_counter() - started
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        durations, loss = timed_steps(steps)
        if device.type == "cuda":
            peak, kind = torch.cuda.max_memory_allocated(device), "CUDA allocated"
        else:
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process RSS"
        trained = torch.cat([p.detach().flatten().float().cpu() for p in parameters])
        change = float((trained - initial).norm() / initial.norm().clamp_min(1e-12))
        # The work is counted last, outside the timing and after the peak is read: the counter keeps its own
        # bookkeeping alive during the call. Compiled code is not counted (the counter sees no kernels inside it).
        step_gflop, step_operations = (None, None) if compile_backend else counted_work(one_step)
        latent_gflop = counted_work(lambda: encode_pixels(pixels))[0] / batch_size if cache_images else None
    finally:
        network_object.restore()  # the base model may serve the next network
        reset_accelerate_state()
    median = statistics.median(durations)
    unet_parameters = sum(p.numel() for p in base.unet.parameters())
    peak_tflops = fraction = None
    if device.type == "cuda":
        peak_tflops = peak_bf16_tflops(torch.cuda.get_device_name(device))
        if peak_tflops and base.version == SD_V1 and unet_parameters > 8e8:  # the ruler is the real SD1.5's
            fraction = sd15_ruler_tflops(resolution, batch_size, median) / peak_tflops
    return BenchResult(
        model=Path(checkpoint).name if checkpoint else model,
        network=describe_network(spec),
        device=str(device),
        resolution=resolution,
        batch_size=batch_size,
        precision=precision,
        gradient_checkpointing=gradient_checkpointing,
        unet_parameters=unet_parameters,
        lora_parameters=sum(p.numel() for p in parameters),
        unet_only=unet_only,
        cached_text_encoder_outputs=cache_text_encoder_outputs,
        cached_latents=cache_latents,
        attention=attention,
        compile_backend=compile_backend,
        channels_last=channels_last,
        seconds_per_step=median,
        images_per_second=batch_size / median,
        peak_memory_bytes=peak,
        peak_memory_kind=kind,
        load_seconds=load_seconds,
        latent_seconds_per_image=latent_seconds,
        text_seconds_per_caption=text_seconds,
        warmup_seconds=warmup_seconds,
        final_loss=loss,
        lora_change=change,
        peak_bf16_tflops=peak_tflops,
        fraction_of_peak=fraction,
        step_gflop=step_gflop,
        latent_gflop_per_image=latent_gflop,
        step_operations=step_operations,
        matmul_tflops=cpu_matmul_tflops(dtype) if device.type == "cpu" else None,
    )


def compare_networks(
    networks: Sequence[str],
    *,
    model: str = "sd15",
    rounds: int = 1,
    on_result: Callable[[BenchResult], None] | None = None,
    **settings,
) -> dict[str, list[BenchResult]]:
    """`run_benchmark` for LoRA and then each of `networks`, all on one base model: {name: one result per round}.

    With several rounds the types take turns, so that a load that comes and goes on a shared machine falls on all
    of them alike. `on_result` sees every result as it comes (a full-size model on a CPU takes minutes per type).
    """
    base = random_model(model)
    names = [BASELINE] + [name for name in networks if name != BASELINE]
    runs: dict[str, list[BenchResult]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            runs[name].append(run_benchmark(model=model, network=name, base=base, **settings))
            if on_result is not None:
                on_result(runs[name][-1])
    return runs


def comparison_table(runs: Mapping[str, Sequence[BenchResult]]) -> str:
    """Each type's median s/step over its rounds, and the median of its ratios to LoRA's step in the same round.

    A ratio within one round compares steps taken minutes apart at most, so it holds better than the seconds when
    the machine's load changes.
    """
    baseline = runs[BASELINE]
    rows = []
    for results in runs.values():
        ratios = [result.seconds_per_step / lora.seconds_per_step for result, lora in zip(results, baseline)]
        seconds = statistics.median(result.seconds_per_step for result in results)
        rows.append((results[0].network, results[0].lora_parameters, seconds, statistics.median(ratios)))
    width = max(len(row[0]) for row in rows)
    lines = [f"{'network':<{width}}  trainable  s/step (median)  ratio to LoRA (median of {len(baseline)} rounds)"]
    lines += [f"{name:<{width}}  {parameters / 1e6:7.2f} M  {seconds:15.4f}  {ratio:13.2f}"
              for name, parameters, seconds, ratio in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sd_scripts.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="sd15",
                        help="random weights with these shapes, written once to a temporary single file")
    parser.add_argument("--checkpoint", default=None, metavar="FILE",
                        help="a real single-file checkpoint to load instead (SD1, SD2 or SDXL)")
    parser.add_argument("--network", nargs="+", choices=tuple(NETWORKS), default=[BASELINE],
                        help="network type(s); several are compared with LoRA in a table")
    parser.add_argument("--network-args", nargs="*", default=[], metavar="KEY=VALUE",
                        help="network options, each given to the types that take it, e.g. preset=attn-mlp unit=2")
    parser.add_argument("--dim", type=int, default=4, help="the rank of every network")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with several networks: measure them in turn this many times; the table gives medians")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="timed steps, after the warm-up steps")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--attention", choices=ATTENTIONS, default="sdpa",
                        help="PyTorch's scaled-dot-product attention (the trainer's default), xformers (where "
                             "installed) or diffusers' plain attention")
    parser.add_argument("--compile", nargs="?", const="inductor", default=None, choices=DYNAMO_BACKENDS,
                        metavar="BACKEND",
                        help="torch.compile the U-Net as the trainer's torch_compile does (compiled in the warm-up), "
                             "with this backend (default: inductor; cudagraphs replays CUDA graphs)")
    parser.add_argument("--channels-last", action="store_true",
                        help="the U-Net and the network in the channels-last (NHWC) memory layout")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--cache-latents", action="store_true", help="skip the VAE encode, as with cached latents")
    parser.add_argument("--cache-images", type=int, default=2,
                        help="images whose latents the caching phase encodes and times (0: skip the phase)")
    parser.add_argument("--text-encodings", type=int, default=3,
                        help="caption batches the text-encoding phase times (0: skip the phase)")
    parser.add_argument("--optimizer", default="AdamW")
    parser.add_argument("--unet-only", action="store_true", help="train the U-Net only (network_train_unet_only)")
    parser.add_argument("--cache-text-encoder-outputs", action="store_true",
                        help="encode the caption once and train the U-Net only, as cache_text_encoder_outputs")
    parser.add_argument("--no-half-vae", action="store_true", help="the VAE in fp32 under mixed precision")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--json-log", type=Path, default=DEFAULT_JSON_LOG, metavar="FILE",
                        help=f"append one JSON line per run here (default {DEFAULT_JSON_LOG.parent.name}/"
                             f"{DEFAULT_JSON_LOG.name})")
    parser.add_argument("--no-json-log", action="store_true", help="write no JSON line")
    options = parser.parse_args(argv)
    quiet_library_notices()
    if options.resolution % 8 or options.resolution < 64 or min(options.batch_size, options.steps, options.rounds) < 1:
        parser.error("the resolution must be a multiple of 8 of at least 64, and batch size, steps and rounds at "
                     "least 1")
    if options.checkpoint and len(options.network) > 1:
        parser.error("several networks are compared on random weights (--model); leave out --checkpoint")
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    settings = dict(
        network_args=options.network_args,
        dim=options.dim,
        resolution=options.resolution,
        batch_size=options.batch_size,
        steps=options.steps,
        warmup_steps=options.warmup_steps,
        precision=options.precision,
        attention=options.attention,
        compile_backend=options.compile,
        channels_last=options.channels_last,
        gradient_checkpointing=options.gradient_checkpointing,
        cache_latents=options.cache_latents,
        optimizer=options.optimizer,
        unet_only=options.unet_only,
        cache_text_encoder_outputs=options.cache_text_encoder_outputs,
        no_half_vae=options.no_half_vae,
    )

    def show(result: BenchResult) -> None:
        print(result.report(), end="\n\n", flush=True)
        if not options.no_json_log:
            append_json_line(options.json_log, result, argv)

    if len(options.network) == 1:
        show(run_benchmark(model=options.model, checkpoint=options.checkpoint, network=options.network[0],
                           cache_images=options.cache_images, text_encodings=options.text_encodings, **settings))
        return 0
    runs = compare_networks(options.network, model=options.model, rounds=options.rounds, on_result=show, **settings)
    print(comparison_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
