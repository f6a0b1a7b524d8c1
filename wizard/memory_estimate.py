"""How much GPU (or, without one, system) memory a LoRA training needs: an estimate, ±30%, from a written-out formula.

    total = frozen weights + LoRA training state + activations + runtime

* frozen weights: the U-Net and the text encoder, plus the VAE unless the latents are cached, in the weight dtype
  (2 bytes with fp16/bf16 mixed precision, 4 bytes in fp32). Without a GPU every part counts: what leaves the GPU
  after caching waits in RAM, the memory a CPU run trains in. The parameter counts are read from the model file's
  header when it is a `.safetensors` file, else taken from the family (SD1: U-Net 860M, text encoder 123M, VAE 84M;
  SD2: U-Net 866M, text encoder 340M with its 23 layers, VAE 84M).
* LoRA training state: the LoRA's parameters (rank x the summed in+out widths of the modules it wraps, see
  `ModelSize`) x (4 bytes of fp32 weight + 4 of gradient + the optimizer's state bytes: AdamW keeps two fp32 states,
  8 bytes; AdamW8bit two 8-bit ones, about 2 bytes).
* activations: what the U-Net keeps for the backward pass, proportional to the image area and the batch size:
  ACTIVATION_GB_PER_MEGAPIXEL per sample in fp32, x MIXED_PRECISION_FACTOR with fp16/bf16 (not 0.5: norms and
  softmax stay fp32 under autocast), x CHECKPOINTING_FACTOR with gradient checkpointing. The trainer always uses
  SDPA or xformers attention, so no term grows with the square of the image area.
* runtime: the libraries, the CUDA context, cuDNN/cuBLAS workspaces and the caching allocator's reserve.

SDXL's activations are not scaled from SD1's: its U-Net has its attention at 1/2 and 1/4 of the latent size where
SD1 has it at full size, so the two differ in shape, not only in width. They are counted (`CountedActivations`) from
the tensors SDXL's real U-Net configuration makes: one forward of diffusers' UNet2DConditionModel built from the shipped
sdxl_base_v1-0 config on the meta device, with hooks summing the outputs of every leaf module (what autograd keeps),
normalisation layers in fp32 (autocast runs them in fp32) and the rest in the half precision of the run. With gradient
checkpointing (diffusers checkpoints every ResnetBlock2D and BasicTransformerBlock) the backward pass keeps the inputs
of those blocks, the tensors outside them, and one block recomputed at a time. With cached text-encoder outputs the
two text encoders stay off the GPU (sd-scripts moves them to the CPU after caching), and with cached latents the VAE.

The constants are calibrated on two sets of figures. Measured: `python -m benchmarks.memory_estimate_check` runs the
trainer's steps (`sd_scripts.bench`) on SD1.5's real shapes in fp32 and bf16 on a CPU and reads the process's peak
resident memory, the load included (README, "Measured figures"): 5.12 GB at 256 px, 6.98 GB at 512 px (5.63 with
gradient checkpointing), 14.95 GB at 512 px batch 4 (10.37 with checkpointing), bf16 3.09 and 4.18 GB at 256 and 512
px. They fit 10.0 GB of activations per megapixel with SDPA attention (an earlier figure of 13.7, measured with plain
attention, kept the attention matrices), 0.52 of that with checkpointing and 0.4 GB for torch and the libraries;
the estimate meets each within 10% (tests/test_memory_estimate_measured.py). Published: sd-scripts'
docs/train_SDXL-en.md trains an SDXL LoRA in 8 GB (U-Net only, cached text-encoder outputs and latents, gradient
checkpointing, an 8-bit optimizer); third-party guides give an SD1.5 LoRA at 512 px, batch 1, fp16, cached latents,
gradient checkpointing and AdamW8bit about 6 GB, 7-8 GB without checkpointing. The formula gives 8.0 (SDXL, dim 8),
5.3 and 6.3 GB for these: the one GPU runtime term cannot meet both published figures exactly, and sd-scripts' own
documentation of SDXL is the one it follows; the SD1.5 figures are met within the 20% the estimate aims at.
`python -m benchmarks.gpu_checks` measures the GPU figures to refit them once a GPU is at hand. A GB here is 1024^3
bytes, as nvidia-smi and Windows count it.

This module imports no torch: it runs before training, while the user still decides.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from safetensors import SafetensorError, safe_open

GB = 1024**3

ACTIVATION_GB_PER_MEGAPIXEL = 10.0  # fp32, batch 1, no checkpointing, SDPA: 2.6 GB at 512x512, measured
CHECKPOINTING_FACTOR = 0.52  # measured at 512 px, batch 1 (0.46) and 4 (0.56)
MIXED_PRECISION_FACTOR = 0.8  # fits the published fp16 figures and the measured CPU bf16 ones (within 10%)
# CUDA context + workspaces + allocator reserve, fitted to the two published GPU figures together (sd-scripts' own
# SDXL 8 GB, which weighs most, and the third-party SD1.5 "about 6 GB"); torch & co. on a CPU, measured.
RUNTIME_GB = {"gpu": 2.2, "cpu": 0.4}
TIGHT_MEMORY_SHARE = 0.9  # an estimate above this share of the free GPU memory is called tight

WEIGHT_BYTES = {"no": 4, "fp16": 2, "bf16": 2}
SAVE_BYTES = {"fp16": 2, "bf16": 2, "float": 4}
# Bytes of optimizer state per trained parameter (on top of the 4-byte fp32 weight and the 4-byte gradient).
OPTIMIZER_STATE_BYTES = {
    "AdamW": 8, "AdamW8bit": 2, "Lion": 4, "Lion8bit": 1, "SGDNesterov": 4, "SGDNesterov8bit": 1,
    "DAdaptation": 12, "DAdaptAdam": 12, "DAdaptLion": 8, "DAdaptSGD": 8, "Prodigy": 16, "AdaFactor": 4,
    "PagedAdamW8bit": 2, "AdamWScheduleFree": 8, "RAdamScheduleFree": 8,  # schedule-free: z and the second moment
}
SAFETENSORS_BYTES_PER_MODULE = 3 * 150  # header entries of lora_down, lora_up and alpha
NETWORK_PARAMETERS_RELATIVE_TO_LORA = {"LoHa": 2.0, "LoKr": 0.5}  # see LoraShape._relative_to_lora


@dataclass(frozen=True)
class CountedActivations:
    """Activation elements per latent pixel (image pixels / 64) of a U-Net forward at batch 1, by where they are kept.

    half:  outputs of every leaf module but the normalisations (stored in the run's half precision, fp32 without);
    fp32:  outputs of GroupNorm and LayerNorm (fp32 under autocast);
    outside_half, outside_fp32: the same for the leaf modules outside the checkpointed blocks;
    block_inputs: the inputs of the checkpointed blocks (kept in half precision);
    largest_block_half, largest_block_fp32: the block whose recomputation holds the most;
    largest_block_input: that block's input (its gradient and its output's are alive while it runs backwards).
    """

    half: int
    fp32: int
    outside_half: int
    outside_fp32: int
    block_inputs: int
    largest_block_half: int
    largest_block_fp32: int
    largest_block_input: int

    def bytes_per_latent_pixel(self, half_bytes: int, checkpointing: bool) -> int:
        largest = self.largest_block_half * half_bytes + self.largest_block_fp32 * 4
        if not checkpointing:
            return self.half * half_bytes + self.fp32 * 4 + 2 * self.largest_block_input * half_bytes
        return (self.outside_half * half_bytes + self.outside_fp32 * 4 + self.block_inputs * half_bytes + largest
                + 2 * self.largest_block_input * half_bytes)


# Counted on the meta device from sd_scripts/models/assets/configs/sdxl_base_v1-0/unet/config.json at 1024 px
# (a 128x128 latent), with 77-token contexts; tests/test_sdxl_wizard_memory.py counts them again.
SDXL_ACTIVATIONS = CountedActivations(half=158_109, fp32=28_640, outside_half=4_285, outside_fp32=1_600,
                                      block_inputs=11_280, largest_block_half=2_560, largest_block_fp32=1_280,
                                      largest_block_input=960)


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts of a base model and of the LoRA modules the trainer wraps in it, per unit of rank.

    A wrapped Linear or 1x1 conv of in -> out features adds rank x (in + out) parameters; a 3x3 conv adds
    rank x (in x 9 + out). The sums below are those of sd-scripts' networks.lora targets (counted from our
    `LoRANetwork` on the shipped configs; a test recounts them).
    """

    family: str  # "sd_v1" | "sd_v2" | "sdxl_base_v1-0" (ss_base_model_version)
    unet_params: int
    text_encoder_params: int
    vae_params: int
    text_encoder_lora_per_rank: int  # CLIPAttention + CLIPMLP Linears
    unet_lora_per_rank: int  # Linears and 1x1 convs inside the Transformer2DModels
    locon_linear_per_rank: int  # with conv_dim: time_emb_proj and 1x1 conv_shortcut of the ResNet blocks, at dim
    locon_conv_per_rank: int  # with conv_dim: the 3x3 convs of ResNet blocks, down- and upsamplers, at conv_dim
    text_encoder_modules: int
    unet_modules: int
    locon_modules: int
    activation_scale: float = 1.0  # this U-Net's width relative to the family's (1.0 for real SD models)
    activations: CountedActivations | None = None  # counted (SDXL); None: SD1's measured per-megapixel figures


SD1 = ModelSize("sd_v1", 859_520_964, 123_060_480, 83_653_863, 165_888, 423_936, 82_880, 544_000, 72, 192, 86)
SD2 = ModelSize("sd_v2", 865_910_724, 340_387_840, 83_653_863, 423_936, 432_128, 82_880, 544_000, 138, 192, 86)
# SDXL base 1.0: U-Net 2,567,463,684; CLIP ViT-L 123,060,480 + OpenCLIP bigG with its projection 694,659,840; VAE as
# SD's. LoRA sums of sd-scripts' targets: per transformer block at width C (context 2048) 28C + 4096, plus 4C per
# Transformer2DModel: 10 blocks at 640 and 60 at 1280; text encoders 12 x 13,824 + 32 x 23,040; LoCon: 17 ResNet
# blocks and 4 resamplers. The same sums give SD1's figures above.
SDXL = ModelSize("sdxl_base_v1-0", 2_567_463_684, 817_720_320, 83_653_863, 903_168, 2_659_840, 58_560, 355_840, 264,
                 722, 66, activations=SDXL_ACTIVATIONS)
FAMILIES = {size.family: size for size in (SD1, SD2, SDXL)}

# Key prefixes of a single-file (LDM layout) checkpoint; SDXL's text encoders are its conditioner's embedders.
UNET_KEYS, VAE_KEYS, TEXT_KEYS, SD2_TEXT_KEYS = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.", \
    "cond_stage_model.model."
SDXL_TEXT_KEYS = "conditioner.embedders."


def model_size(base_model: str | None, v2: bool, sdxl: bool = False) -> ModelSize:
    """The sizes of this model: counted from a `.safetensors` header, else the family's (sdxl picks SDXL, v2 SD2).

    A file whose U-Net is much smaller than the family's (the demo's tiny model) gets its LoRA widths and
    activations scaled by the square root of the parameter ratio, since parameters grow with the square of a width.
    """
    family = SDXL if sdxl else SD2 if v2 else SD1
    is_safetensors = bool(base_model) and Path(base_model).suffix.lower() == ".safetensors"
    counts = _count_parameters(Path(base_model)) if is_safetensors else None
    if counts is None:
        return family
    unet, text_encoder, vae, family = counts
    unet_width = math.sqrt(unet / family.unet_params)
    text_width = math.sqrt(text_encoder / family.text_encoder_params)
    if abs(unet_width - 1) < 0.1 and abs(text_width - 1) < 0.1:
        return replace(family, unet_params=unet, text_encoder_params=text_encoder, vae_params=vae)
    return replace(
        family,
        unet_params=unet,
        text_encoder_params=text_encoder,
        vae_params=vae,
        text_encoder_lora_per_rank=round(family.text_encoder_lora_per_rank * text_width),
        unet_lora_per_rank=round(family.unet_lora_per_rank * unet_width),
        locon_linear_per_rank=round(family.locon_linear_per_rank * unet_width),
        locon_conv_per_rank=round(family.locon_conv_per_rank * unet_width),
        activation_scale=unet_width,
    )


def _count_parameters(path: Path) -> tuple[int, int, int, ModelSize] | None:
    """(U-Net, text encoders, VAE parameters, family) from the file's header, None when it is not a readable one."""
    totals = {UNET_KEYS: 0, TEXT_KEYS: 0, SDXL_TEXT_KEYS: 0, VAE_KEYS: 0}
    is_sd2 = False
    try:
        with safe_open(str(path), framework="numpy") as checkpoint:
            for key in checkpoint.keys():
                prefix = next((p for p in totals if key.startswith(p)), None)
                if prefix is not None:
                    totals[prefix] += math.prod(checkpoint.get_slice(key).get_shape())
                is_sd2 = is_sd2 or key.startswith(SD2_TEXT_KEYS)
    except (OSError, SafetensorError):
        return None
    text = totals[TEXT_KEYS] + totals[SDXL_TEXT_KEYS]
    if not totals[UNET_KEYS] or not text:
        return None
    family = SDXL if totals[SDXL_TEXT_KEYS] else SD2 if is_sd2 else SD1
    return totals[UNET_KEYS], text, totals[VAE_KEYS], family


@dataclass(frozen=True)
class LoraShape:
    """What is trained: rank and conv rank, and which of the two models get LoRA modules."""

    dim: int
    conv_dim: int | None = None
    train_unet: bool = True
    train_text_encoder: bool = True
    network_type: str = "LoRA"

    def parameters(self, size: ModelSize) -> int:
        """The trained parameters: a kohya LoRA's count of this rank, scaled for the other algorithms."""
        return round(self._lora_parameters(size) * self._relative_to_lora())

    def _relative_to_lora(self) -> float:
        """LoHa holds two factor pairs of a LoRA's shapes per layer; LoKr's Kronecker factors are at most half a
        LoRA's (the smaller factor is tiny, the larger one a low-rank pair of reduced sides); IA3 holds one vector
        per layer, about 1/(2 x dim) of a LoRA pair; the LoRA-shaped types (LoCon, DyLoRA, DoRA) are 1."""
        if self.network_type == "IA3":
            return 1 / (2 * self.dim)
        return NETWORK_PARAMETERS_RELATIVE_TO_LORA.get(self.network_type, 1.0)

    def _lora_parameters(self, size: ModelSize) -> int:
        count = 0
        if self.train_text_encoder:
            count += self.dim * size.text_encoder_lora_per_rank
        if self.train_unet:
            count += self.dim * size.unet_lora_per_rank
            if self.conv_dim:
                count += self.dim * size.locon_linear_per_rank + self.conv_dim * size.locon_conv_per_rank
        return count

    def modules(self, size: ModelSize) -> int:
        count = size.text_encoder_modules if self.train_text_encoder else 0
        if self.train_unet:
            count += size.unet_modules + (size.locon_modules if self.conv_dim else 0)
        return count

    def file_bytes(self, size: ModelSize, save_precision: str) -> int:
        """The size of the saved LoRA file: its weights in the save precision plus the safetensors header."""
        return self.parameters(size) * SAVE_BYTES.get(save_precision, 4) + self.modules(size) * (
            SAFETENSORS_BYTES_PER_MODULE + 4)


@dataclass(frozen=True)
class TrainingSetup:
    """The settings that decide the memory of a run."""

    resolution: tuple[int, int]  # (width, height) of the largest training size
    batch_size: int
    mixed_precision: str  # "no" | "fp16" | "bf16", as the trainer will run it on this machine
    gradient_checkpointing: bool
    cache_latents: bool
    optimizer: str  # sd-scripts' name, e.g. "AdamW8bit"
    lora: LoraShape
    on_gpu: bool
    cache_text_encoder_outputs: bool = False  # the text encoders then leave the GPU after encoding the captions


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimate in GB, by part, so the report can say where the memory goes."""

    frozen_weights_gb: float
    lora_training_gb: float
    activations_gb: float
    runtime_gb: float

    @property
    def total_gb(self) -> float:
        return self.frozen_weights_gb + self.lora_training_gb + self.activations_gb + self.runtime_gb


def estimate_training_memory(setup: TrainingSetup, size: ModelSize = SD1) -> MemoryEstimate:
    """The peak memory of one training step, ±30% (see the module's docstring for the formula)."""
    weight_bytes = WEIGHT_BYTES[setup.mixed_precision]
    # Cached latents and text-encoder outputs free the VAE and the text encoders from the GPU; without one they
    # wait in the same RAM that training uses, so on a CPU every part counts.
    leaves = setup.on_gpu
    frozen = (size.unet_params + (0 if setup.cache_text_encoder_outputs and leaves else size.text_encoder_params)
              + (0 if setup.cache_latents and leaves else size.vae_params))
    lora_bytes_per_parameter = 4 + 4 + OPTIMIZER_STATE_BYTES.get(setup.optimizer, 8)
    return MemoryEstimate(
        frozen_weights_gb=frozen * weight_bytes / GB,
        lora_training_gb=setup.lora.parameters(size) * lora_bytes_per_parameter / GB,
        activations_gb=_activations_gb(setup, size),
        runtime_gb=RUNTIME_GB["gpu" if setup.on_gpu else "cpu"],
    )


def _activations_gb(setup: TrainingSetup, size: ModelSize) -> float:
    """Counted activations where the family has them (SDXL), else SD1's measured figures per megapixel."""
    width, height = setup.resolution
    if size.activations is not None:
        latent_pixels = (width // 8) * (height // 8)
        # autocast computes the half-precision parts in 2 bytes with fp16/bf16, 4 in fp32
        per_pixel = size.activations.bytes_per_latent_pixel(WEIGHT_BYTES[setup.mixed_precision],
                                                            setup.gradient_checkpointing)
        return per_pixel * latent_pixels * setup.batch_size * size.activation_scale / GB
    activations = ACTIVATION_GB_PER_MEGAPIXEL * width * height / 1e6 * setup.batch_size * size.activation_scale
    if setup.mixed_precision != "no":
        activations *= MIXED_PRECISION_FACTOR
    if setup.gradient_checkpointing:
        activations *= CHECKPOINTING_FACTOR
    return activations


@dataclass(frozen=True)
class GpuMemory:
    """The first NVIDIA GPU (the one training uses) as nvidia-smi reports it, in GB."""

    name: str
    total_gb: float
    used_gb: float

    @property
    def free_gb(self) -> float:
        return self.total_gb - self.used_gb


@lru_cache(maxsize=1)
def free_gpu_memory_gb() -> float | None:
    """The free memory of the GPU training uses, read once per session (the defaults that follow it ask often)."""
    gpu = read_gpu_memory()
    return None if gpu is None else gpu.free_gb


def read_gpu_memory(timeout_s: float = 10.0) -> GpuMemory | None:
    """Ask nvidia-smi (no torch needed); None when there is no NVIDIA GPU or its tool does not answer."""
    try:
        answer = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total,memory.used,name", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if answer.returncode != 0:
        return None
    return parse_nvidia_smi(answer.stdout)


def parse_nvidia_smi(output: str) -> GpuMemory | None:
    """The first line of `memory.total, memory.used, name` in MiB; None when it cannot be read."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return None
    total, used, name = (part.strip() for part in lines[0].split(",", 2))
    try:
        return GpuMemory(name=name, total_gb=float(total) / 1024, used_gb=float(used) / 1024)
    except ValueError:
        return None
