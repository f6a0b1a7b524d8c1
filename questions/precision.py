"""Speed, memory and the noise: mixed precision, SDXL's VAE in fp16, gradient checkpointing, torch.compile (with an
NVIDIA GPU), noise offset and min-SNR weighting."""

from __future__ import annotations

import importlib.util

from sd_scripts.args import DYNAMO_BACKENDS
from sd_scripts.cpu_features import cpu_has_native_bf16
from wizard.config import TrainConfig, trains_sdxl
from wizard.question import Question

from questions.build import field_help, gate, is_set
from questions.checks import existing_file

MIXED_PRECISIONS = ("fp16", "bf16", "no")  # the popups' order, the GPU default first
NOISE_OFFSET_SUGGESTED = 0.1  # the popups' value
MIN_SNR_GAMMA_SUGGESTED = 5.0  # the paper's recommendation
# SDXL's own VAE overflows in fp16 (NaN latents, black images): keep it in fp32, or use a VAE fixed for fp16.
SDXL_VAE_CHOICES = ("keep the VAE in fp32", "use an fp16-fix VAE file")
VAE_EXTENSIONS = ("safetensors", "pt", "ckpt")


def refuse_bf16_without_support(answer: str, config: TrainConfig) -> str | None:
    """bf16 is offered with an NVIDIA GPU, or on a CPU with bf16 instructions; elsewhere it would gain nothing."""
    if answer == "bf16" and not config.cuda and not cpu_has_native_bf16():
        return ("This computer has no NVIDIA GPU and its CPU has no bf16 instructions (AVX512-BF16 or AMX), so bf16 "
                "would not be faster; choose no (full precision).")
    return None


def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def refuse_inductor_without_triton(answer: str, config: TrainConfig) -> str | None:
    """inductor generates its GPU kernels with Triton, which PyTorch for Windows does not ship."""
    if answer == "inductor" and not _has_triton():
        return ("inductor needs Triton, which this installation lacks (PyTorch for Windows has none); choose "
                "cudagraphs, or go back and answer no.")
    return None


def _sdxl_in_fp16(config: TrainConfig) -> bool:
    return trains_sdxl(config) and config.get("mixed_precision") == "fp16"


def _store_sdxl_vae(answer: str, config: TrainConfig) -> None:
    in_fp32 = answer == SDXL_VAE_CHOICES[0]
    config.set("no_half_vae", in_fp32)
    if in_fp32:
        config.set("vae", None)

QUESTIONS: list[Question] = [
    Question(
        id="mixed_precision", kind="choice", field="mixed_precision", choices=MIXED_PRECISIONS,
        text="Which mixed precision?",
        help=field_help("mixed_precision"),
        validate=refuse_bf16_without_support,
    ),
    Question(
        id="sdxl_vae", kind="choice", field=None, fields=("no_half_vae", "vae"), choices=SDXL_VAE_CHOICES,
        when=_sdxl_in_fp16,
        current=lambda config: SDXL_VAE_CHOICES[0] if config.get("no_half_vae") else SDXL_VAE_CHOICES[1],
        store=_store_sdxl_vae,
        text="SDXL's VAE makes NaN (black) images in fp16: keep it in fp32, or use an fp16-fix VAE file?",
        help="Keeping the VAE in fp32 (no_half_vae) costs memory only while latents are encoded and samples "
             "decoded. The fp16-fix VAE (sdxl.vae.safetensors from madebyollin/sdxl-vae-fp16-fix) gives the same "
             "images in fp16. Default: keep it in fp32.",
    ),
    Question(
        id="sdxl_vae_file", kind="file", field="vae", extensions=VAE_EXTENSIONS,
        when=lambda config: _sdxl_in_fp16(config) and not config.get("no_half_vae"),
        text="Choose the fp16-fix VAE file.",
        help=field_help("vae"),
        validate=existing_file("VAE", VAE_EXTENSIONS, required=True),
    ),
    Question(
        id="gradient_checkpointing", kind="yesno", field="gradient_checkpointing",
        text="Use gradient checkpointing? (much less VRAM, about 30% slower)",
        help=field_help("gradient_checkpointing"),
    ),
    Question(
        id="torch_compile", kind="yesno", field="torch_compile", when=lambda config: config.cuda,
        text="Compile the U-Net with torch.compile? (faster steps after minutes of compiling)",
        help=field_help("torch_compile"),
    ),
    Question(
        id="dynamo_backend", kind="choice", field="dynamo_backend", choices=DYNAMO_BACKENDS[:2],
        when=lambda config: config.cuda and config.get("torch_compile"),
        text="Which compiler should torch.compile use?",
        help=field_help("dynamo_backend"),
        # without Triton the one compiler that works here is suggested
        current=lambda config: config.get("dynamo_backend") if _has_triton() else "cudagraphs",
        validate=refuse_inductor_without_triton,
    ),
    gate(
        "use_noise_offset", "Use noise offset? (darker darks and brighter brights)", field_help("noise_offset"),
        fields=("noise_offset",),
        start_with={"noise_offset": lambda config: NOISE_OFFSET_SUGGESTED},
    ),
    Question(
        id="noise_offset", kind="float", field="noise_offset", when=is_set("noise_offset"),
        text="Noise offset (0 to 1)?",
        help=field_help("noise_offset"),
    ),
    gate(
        "use_min_snr_gamma", "Use min-SNR gamma weighting? (often cleaner results, faster)",
        field_help("min_snr_gamma"),
        fields=("min_snr_gamma",),
        start_with={"min_snr_gamma": lambda config: MIN_SNR_GAMMA_SUGGESTED},
    ),
    Question(
        id="min_snr_gamma", kind="float", field="min_snr_gamma", when=is_set("min_snr_gamma"),
        text="Min-SNR gamma?",
        help=field_help("min_snr_gamma"),
    ),
]
