"""Benchmark LoRA training steps: `python -m sd_scripts.bench --resolution 512 --batch-size 1 --steps 10`.

The model is randomly initialised with the real SD1.5 shapes (`--model sd15`, 860 M U-Net parameters), SDXL's
(`--model sdxl`, 2.6 G) or the tiny demo shapes (`--model tiny`, `tiny-sdxl`), so nothing needs to be downloaded.
Each step is what training runs: VAE encode (unless `--cache-latents`), text encoding (unless
`--cache-text-encoder-outputs`, which encodes once and parks the text encoders in RAM on a GPU, as the trainer does)
and the U-Net's loss with the network (U-Net and text encoder, or the U-Net only with `--unet-only`; rank `--dim`)
applied, backward, optimizer step. `--no-half-vae` keeps the VAE in fp32, as the trainer's no_half_vae. It prints images/s, the median seconds per step after the warm-up steps, and the
peak memory: the CUDA allocator's peak on a GPU, else the peak resident memory of the process.

`--network loha dylora ...` measures each network type of the trainer's table (built as training builds it, with
`--network-args` such as preset=attn-mlp given to the types that take them) on one base model, in turn for
`--rounds` rounds, and ends with a table of their medians and their ratio to LoRA (measured too) in the same
round. On a CPU the process's peak memory only grows, so after the first network it is the highest so far.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sd_scripts.networks.kinds import NETWORK_TYPES, NetworkType, parse_network_args

MODELS = ("sd15", "tiny", "sdxl", "tiny-sdxl")
# "lora", "locon", "lycoris-locon", "loha", "lokr", "ia3", "dylora": the table's names as command-line words
NETWORKS: dict[str, NetworkType] = {kind.name.lower().replace(" ", "-"): kind for kind in NETWORK_TYPES.values()}
BASELINE = "lora"


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

    def report(self) -> str:
        return "\n".join([
            f"model {self.model}: U-Net {self.unet_parameters / 1e6:.1f} M parameters, {self.network} "
            f"{self.lora_parameters / 1e6:.2f} M trainable; {self.resolution}x{self.resolution}, "
            f"batch {self.batch_size}, precision {self.precision}, "
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}, "
            f"{'U-Net only' if self.unet_only else 'U-Net and text encoder'}"
            f"{', cached text-encoder outputs' if self.cached_text_encoder_outputs else ''}, device {self.device}",
            f"s/step (median): {self.seconds_per_step:.4f}",
            f"images/s: {self.images_per_second:.2f}",
            f"peak memory ({self.peak_memory_kind}): {self.peak_memory_bytes / 2**20:.0f} MiB",
        ])


def random_model(name: str):
    """A BaseModel with random weights: SD1.5's or SDXL's shipped configs, or the demos' tiny widths."""
    import torch

    from sd_scripts.demo import tiny_sd15_model, tiny_sdxl_model
    from sd_scripts.models import SD_V1, SDXL, model_from_shipped_configs

    if name == "tiny":
        return tiny_sd15_model()
    if name == "tiny-sdxl":
        return tiny_sdxl_model()
    torch.manual_seed(0)
    return model_from_shipped_configs(SDXL if name == "sdxl" else SD_V1)


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
    network: str = BASELINE,
    network_args: Sequence[str] = (),
    dim: int = 4,
    resolution: int = 512,
    batch_size: int = 1,
    steps: int = 10,
    warmup_steps: int = 2,
    precision: str = "no",
    gradient_checkpointing: bool = False,
    cache_latents: bool = False,
    optimizer: str = "AdamW",
    unet_only: bool = False,
    cache_text_encoder_outputs: bool = False,
    no_half_vae: bool = False,
    base=None,
) -> BenchResult:
    """Time training steps of one network type; `base` reuses a model built by `random_model(model)`."""
    import torch

    from sd_scripts.models.text_encoding import encode_sdxl_tokens, encode_tokens, sdxl_time_ids, tokenize
    from sd_scripts.networks.factory import create_network
    from sd_scripts.optimizer_kinds import resolve_optimizer
    from sd_scripts.training.noise import make_noise_scheduler
    from sd_scripts.training.optimizers import build_optimizer
    from sd_scripts.training.precision import (
        WEIGHT_DTYPES,
        configure_attention,
        create_accelerator,
        enable_gradient_checkpointing,
        freeze_base_model,
        reset_accelerate_state,
        resolve_mixed_precision,
    )
    from sd_scripts.training.step import NoiseSettings, unet_loss

    precision, notes = resolve_mixed_precision(precision, torch.cuda.is_available())
    for note in notes:
        print(note, file=sys.stderr)
    accelerator = create_accelerator(precision)
    device, dtype = accelerator.device, WEIGHT_DTYPES[precision]
    base = base or random_model(model)
    unet_only = unet_only or cache_text_encoder_outputs  # cached outputs cannot follow a trained text encoder
    spec = network_spec(network, dim=dim, network_args=network_args, unet_only=unet_only)
    network_object = create_network(spec, base.text_encoders if base.is_sdxl else base.text_encoder, base.unet)
    network_object.apply_to()
    network_object.train()  # DyLoRA's random rank acts in training mode, as in the trainer
    freeze_base_model((base.unet, *base.text_encoders), device, dtype)
    vae_dtype = torch.float32 if no_half_vae else dtype
    freeze_base_model((base.vae,), device, vae_dtype)
    network_object.to(device, dtype=torch.float32)
    configure_attention(base.unet, base.vae, xformers=False, on_cuda=device.type == "cuda")
    if gradient_checkpointing:
        enable_gradient_checkpointing(base.unet, base.text_encoders, text_encoder_trained=not unet_only)
    groups = network_object.prepare_optimizer_params(1e-4, 1e-4, 1e-4)
    built = build_optimizer(resolve_optimizer(optimizer), groups, 1e-4, {})
    _, optimizer_object = accelerator.prepare(network_object, built.optimizer)
    parameters = [p for group in groups for p in group["params"]]

    scheduler = make_noise_scheduler(v_parameterization=False)
    generator = torch.Generator("cpu").manual_seed(0)
    latent_size = resolution // 8
    pixels = torch.rand(batch_size, 3, resolution, resolution, generator=generator) * 2 - 1
    cached = torch.randn(batch_size, 4, latent_size, latent_size, generator=generator)
    captions = ["a photo of a cat, masterpiece"] * batch_size
    ids = tokenize(base.tokenizer, captions, None, False).to(device)
    ids_2 = tokenize(base.tokenizer_2, captions, None, True).to(device) if base.is_sdxl else None
    sizes = torch.tensor([[resolution, resolution]] * batch_size)
    time_ids = sdxl_time_ids(sizes, torch.zeros_like(sizes), sizes).to(device, torch.float32)
    weights = torch.ones(batch_size)

    def conditioning():
        """The context, and SDXL's added conditioning, as the trainer's encode_captions / sdxl_conditioning."""
        with torch.set_grad_enabled(not unet_only), accelerator.autocast():
            if not base.is_sdxl:
                return encode_tokens(base.text_encoder, ids, clip_skip=None, max_token_length=None, v2=False), None
            context, pooled = encode_sdxl_tokens(base.text_encoder, base.text_encoder_2, ids, ids_2,
                                                 max_token_length=None)
        return context, {"text_embeds": pooled, "time_ids": time_ids}

    if cache_text_encoder_outputs:
        with torch.no_grad():
            cached_conditioning = conditioning()
    # On a GPU the trainer keeps in RAM what the steps no longer use: the VAE with cached latents, the text
    # encoders with cached outputs.
    if device.type == "cuda":
        parked = ([base.vae] if cache_latents else []) + (base.text_encoders if cache_text_encoder_outputs else [])
        for module in parked:
            module.to("cpu")
        torch.cuda.empty_cache()

    def one_step() -> None:
        with torch.no_grad():
            if cache_latents:
                latents = cached.to(device, dtype=dtype)
            else:
                latents = base.vae.encode(pixels.to(device, dtype=vae_dtype)).latent_dist.sample().to(dtype)
        latents = latents * base.vae.config.scaling_factor
        context, added = cached_conditioning if cache_text_encoder_outputs else conditioning()
        loss = unet_loss(base.unet, scheduler, latents, context, weights, generator, NoiseSettings(),
                         accelerator.autocast, added)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(parameters, 1.0)
        optimizer_object.step()
        optimizer_object.zero_grad(set_to_none=True)
        loss.item()  # waits for the GPU, so the step is timed whole

    try:
        for _ in range(warmup_steps):
            one_step()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        durations = []
        for _ in range(steps):
            started = time.perf_counter()
            one_step()
            durations.append(time.perf_counter() - started)
        if device.type == "cuda":
            peak, kind = torch.cuda.max_memory_allocated(device), "CUDA allocated"
        else:
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process RSS"
    finally:
        network_object.restore()  # the base model may serve the next network
        reset_accelerate_state()
    median = statistics.median(durations)
    return BenchResult(
        model=model,
        network=describe_network(spec),
        device=str(device),
        resolution=resolution,
        batch_size=batch_size,
        precision=precision,
        gradient_checkpointing=gradient_checkpointing,
        unet_parameters=sum(p.numel() for p in base.unet.parameters()),
        lora_parameters=sum(p.numel() for p in parameters),
        unet_only=unet_only,
        cached_text_encoder_outputs=cache_text_encoder_outputs,
        seconds_per_step=median,
        images_per_second=batch_size / median,
        peak_memory_bytes=peak,
        peak_memory_kind=kind,
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
    parser.add_argument("--model", choices=MODELS, default="sd15")
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
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--cache-latents", action="store_true", help="skip the VAE encode, as with cached latents")
    parser.add_argument("--optimizer", default="AdamW")
    parser.add_argument("--unet-only", action="store_true", help="train the U-Net only (network_train_unet_only)")
    parser.add_argument("--cache-text-encoder-outputs", action="store_true",
                        help="encode the caption once and train the U-Net only, as cache_text_encoder_outputs")
    parser.add_argument("--no-half-vae", action="store_true", help="the VAE in fp32 under mixed precision")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    options = parser.parse_args(argv)
    if options.resolution % 8 or options.resolution < 64 or min(options.batch_size, options.steps, options.rounds) < 1:
        parser.error("the resolution must be a multiple of 8 of at least 64, and batch size, steps and rounds at "
                     "least 1")
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
        gradient_checkpointing=options.gradient_checkpointing,
        cache_latents=options.cache_latents,
        optimizer=options.optimizer,
        unet_only=options.unet_only,
        cache_text_encoder_outputs=options.cache_text_encoder_outputs,
        no_half_vae=options.no_half_vae,
    )
    if len(options.network) == 1:
        print(run_benchmark(model=options.model, network=options.network[0], **settings).report())
        return 0
    runs = compare_networks(options.network, model=options.model, rounds=options.rounds,
                            on_result=lambda result: print(result.report(), end="\n\n", flush=True), **settings)
    print(comparison_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
