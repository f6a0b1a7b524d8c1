"""The wizard's one config object: every setting declared once, with its type, tuned default, allowed values and help.

The field names are the seed project's (LoRA_Easy_Training_Scripts, spring 2023), so that its JSON files load and an
artist who read its README finds the same words. The JSON format, the summary popup, the README's defaults table and
the question texts all read these declarations; `wizard.translate` maps them to the trainer's kohya names.

Defaults are tuned for LoRA training (not sd-scripts' command-line defaults) and a few depend on the machine: without
CUDA there is no 8-bit AdamW, no fp16 autocast and no xformers, so the CPU defaults are AdamW, "no" and off.

This module must stay light: it is imported before the first popup appears.
"""

from __future__ import annotations

import copy as copy_module
import math
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Callable, Literal

from sd_scripts.args import DYNAMO_BACKENDS, LR_SCHEDULERS, MIXED_PRECISIONS, SAMPLERS, SAVE_FORMATS, SAVE_PRECISIONS
from sd_scripts.errors import UserFacingError
from sd_scripts.networks.kinds import LYCORIS_PRESETS
from sd_scripts.networks.kinds import NETWORK_TYPES as NETWORK_TYPE_TABLE
from sd_scripts.optimizer_kinds import OPTIMIZERS, optimizer_help
from wizard.memory_estimate import (SDXL, TIGHT_MEMORY_SHARE, LoraShape, TrainingSetup, estimate_training_memory,
                                    free_gpu_memory_gb)
from sd_scripts.models.checkpoint_header import ModelFamily
from wizard.model_family import found_family, is_sd2, is_sdxl

# Written into every saved JSON; `wizard.formats.seed_json` migrates older versions up to this one.
CONFIG_VERSION = 1

Origin = Literal["default", "asked", "loaded"]
ORIGINS: tuple[str, ...] = ("default", "asked", "loaded")

NETWORK_TYPES = tuple(NETWORK_TYPE_TABLE)
MAX_TOKEN_LENGTHS = (75, 150, 225)


class _SameAsDefault:
    """Marks a field whose default does not depend on the machine."""

    def __repr__(self) -> str:
        return "SAME_AS_DEFAULT"


SAME_AS_DEFAULT: Any = _SameAsDefault()


class ConfigError(UserFacingError):
    """A value that does not fit its field: names the key, the value and what was expected."""


@dataclass(frozen=True)
class Field:
    """One setting of the wizard.

    type:       str, int, float, bool, dict (of strings) or list (of strings); an int is accepted where float is.
    default:    the tuned default on a machine with CUDA.
    default_without_cuda: the default on a machine without CUDA, when it differs.
    nullable:   whether None ("not set") is a valid value.
    path:       "file" or "folder" when the value is a path; `extensions` lists accepted file suffixes (no dot).
    """

    name: str
    type: type
    default: Any
    help: str
    group: str
    label: str
    choices: tuple | None = None
    nullable: bool = True
    minimum: float | None = None
    maximum: float | None = None
    path: Literal["file", "folder"] | None = None
    extensions: tuple[str, ...] = ()
    default_without_cuda: Any = SAME_AS_DEFAULT
    follows: "DefaultRule | None" = None

    def default_for(self, cuda: bool) -> Any:
        if not cuda and self.default_without_cuda is not SAME_AS_DEFAULT:
            return copy_module.deepcopy(self.default_without_cuda)
        return copy_module.deepcopy(self.default)

    def expected(self) -> str:
        """What a valid value looks like, in words, for error messages and the defaults table."""
        if self.choices is not None:
            words = "one of " + ", ".join(repr(choice) for choice in self.choices)
        elif self.path == "file":
            words = "a file path" + (f" ending in .{', .'.join(self.extensions)}" if self.extensions else "")
        elif self.path == "folder":
            words = "a folder path"
        else:
            words = _TYPE_WORDS[self.type]
            if self.minimum is not None and self.maximum is not None:
                words += f" from {self.minimum:g} to {self.maximum:g}"
            elif self.minimum is not None:
                words += f" of at least {self.minimum:g}"
            elif self.maximum is not None:
                words += f" of at most {self.maximum:g}"
        return words + (" (or empty)" if self.nullable else "")


@dataclass(frozen=True)
class DefaultRule:
    """A default that follows other answers: while a field is at its default, `TrainConfig.get` gives
    `value(config, declared default)`; `why(config)` says in a few words why, for the summary when it differs.

    The declared default stays the field's one default (the README's table, the JSON format); the rule only adapts it,
    so the summary, the translation to the trainer and the pre-flight report all see the same adapted value.
    """

    value: Callable[["TrainConfig", Any], Any]
    why: Callable[["TrainConfig"], str]


# The training resolution the bucket defaults (320 to 960 px) are tuned for.
BUCKET_DEFAULTS_RESOLUTION = 512


def _bucket_scale(config: "TrainConfig") -> tuple[float, int, int, int]:
    """(resolution side / 512 by area, shorter side, longer side, bucket step) of the config's answers."""
    width = config.get("train_resolution")
    height = config.get("height_resolution") or width
    return math.sqrt(width * height) / BUCKET_DEFAULTS_RESOLUTION, min(width, height), max(width, height), \
        config.get("bucket_reso_steps")


def default_min_bucket(config: "TrainConfig", declared: int) -> int:
    """The tuned minimum scaled to the resolution, rounded down to the bucket step, at least one step and at most the
    shorter side (sd-scripts stops when the minimum is above the resolution, and a minimum of 0 divides by zero)."""
    scale, shorter, _longer, step = _bucket_scale(config)
    scaled = int(declared * scale) // step * step
    return max(step, min(scaled, shorter // step * step))


def default_max_bucket(config: "TrainConfig", declared: int) -> int:
    """The tuned maximum scaled to the resolution, rounded up to the bucket step, at least the longer side."""
    scale, _shorter, longer, step = _bucket_scale(config)
    return max(math.ceil(declared * scale / step), math.ceil(longer / step)) * step


def _follows_resolution(config: "TrainConfig") -> str:
    width, height = config.get("train_resolution"), config.get("height_resolution")
    resolution = f"{width}x{height}" if height not in (None, width) else f"{width}"
    return (f"the resolution is {resolution} and the default is tuned for {BUCKET_DEFAULTS_RESOLUTION}, so it is "
            f"scaled to the resolution on the {config.get('bucket_reso_steps')} px bucket step")


# --- defaults that follow the base model's family (read from its file, see wizard.model_family) -------------------

# SDXL's resolution: sd-scripts' docs/train_SDXL-en.md, "The default resolution of SDXL is 1024x1024".
SDXL_RESOLUTION = 1024


def _family(config: "TrainConfig") -> ModelFamily | None:
    return found_family(config.get("base_model"))


def trains_sdxl(config: "TrainConfig") -> bool:
    """The base model is SDXL: as its file says, or as the settings say when the file cannot be read here."""
    family = _family(config)
    return is_sdxl(family) if family is not None else config.get("sdxl")


def _found_in_file(config: "TrainConfig") -> str:
    family = _family(config)
    return f"the base model file is {family.description}" if family is not None else "the settings say SDXL"


def default_sdxl(config: "TrainConfig", declared: bool) -> bool:
    family = _family(config)
    return is_sdxl(family) if family is not None else declared


def default_v2(config: "TrainConfig", declared: bool) -> bool:
    family = _family(config)
    return is_sd2(family) if family is not None else declared


def default_v_parameterization(config: "TrainConfig", declared: bool) -> bool:
    family = _family(config)
    return family.v_prediction if family is not None and family.v_prediction is not None else declared


def default_zero_terminal_snr(config: "TrainConfig", declared: bool) -> bool:
    """On for SDXL v-prediction models: NoobAI's v-prediction models were trained with zero terminal SNR, and a LoRA
    for them is trained on the same noise schedule."""
    return True if trains_sdxl(config) and config.get("v_parameterization") else declared


def default_unet_only(config: "TrainConfig", declared: bool) -> bool:
    """SDXL: the U-Net only, as sd-scripts' SDXL docs advise (two text encoders give unexpected results; 8 GB)."""
    return True if trains_sdxl(config) and not config.get("text_only") else declared


CAPTION_CHANGES = ("shuffle_captions", "caption_dropout_rate", "caption_dropout_every_n_epochs",
                   "caption_tag_dropout_rate", "token_warmup_step")


def default_cache_text_encoder_outputs(config: "TrainConfig", declared: bool) -> bool:
    """Text encoders not trained: each caption is encoded once (sd-scripts' 8 GB advice for SDXL; the same saving
    for SD 1.x/2.x), unless captions change from step to step, which a cache cannot follow."""
    if not config.get("unet_only"):
        return declared
    return not any(config.get(name) for name in CAPTION_CHANGES)


def _follows_frozen_text_encoders(config: "TrainConfig") -> str:
    return "the text encoders are not trained and no caption changes from step to step"


def default_no_half_vae(config: "TrainConfig", declared: bool) -> bool:
    """SDXL's own VAE overflows in fp16 (NaN latents, black samples): kept in fp32 unless a separate VAE is chosen
    (the fp16-fix VAE)."""
    if trains_sdxl(config) and config.get("mixed_precision") == "fp16" and config.get("vae") is None:
        return True
    return declared


def default_resolution(config: "TrainConfig", declared: int) -> int:
    return SDXL_RESOLUTION if trains_sdxl(config) else declared


def default_gradient_checkpointing(config: "TrainConfig", declared: bool) -> bool:
    """SDXL: on unless the GPU's free memory holds the run without it (estimated as the pre-flight report does)."""
    if not trains_sdxl(config):
        return declared
    free_gb = free_gpu_memory_gb() if config.cuda else None
    return free_gb is None or sdxl_needs_checkpointing(config, free_gb)


def _follows_sdxl(config: "TrainConfig") -> str:
    return f"{_found_in_file(config)}, and sd-scripts advises this for SDXL"


def _follows_sdxl_memory(config: "TrainConfig") -> str:
    free_gb = free_gpu_memory_gb() if config.cuda else None
    where = "no GPU's free memory is known" if free_gb is None else f"{free_gb:.1f} GB are free on the GPU"
    return f"SDXL needs it unless the GPU holds the run without it, and {where}"


def sdxl_needs_checkpointing(config: "TrainConfig", free_gb: float) -> bool:
    """Whether this SDXL run, estimated without gradient checkpointing, needs more than the GPU's free memory."""
    width = config.get("train_resolution")
    setup = TrainingSetup(
        resolution=(width, config.get("height_resolution") or width), batch_size=config.get("batch_size"),
        mixed_precision=config.get("mixed_precision"), gradient_checkpointing=False,
        cache_latents=config.get("cache_latents"), optimizer=config.get("optimizer_type"),
        lora=LoraShape(dim=config.get("net_dim"), train_text_encoder=not config.get("unet_only")), on_gpu=True,
        cache_text_encoder_outputs=config.get("cache_text_encoder_outputs"))
    return estimate_training_memory(setup, SDXL).total_gb > TIGHT_MEMORY_SHARE * free_gb


_TYPE_WORDS = {
    str: "text",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    dict: "a set of name = value texts",
    list: "a list of texts",
}


def _f(name: str, type_: type, default: Any, group: str, label: str, help: str, **more: Any) -> Field:
    return Field(name=name, type=type_, default=default, help=help, group=group, label=label, **more)


FIELDS: tuple[Field, ...] = (
    # --- paths ---------------------------------------------------------------------------------------------------
    _f("base_model", str, None, "paths", "Base model",
       "The Stable Diffusion checkpoint (.safetensors or .ckpt: SD 1.x, SD 2.x or SDXL) the LoRA is trained on; the LoRA "
       "works best on this model and its close relatives. Must be chosen before training.",
       path="file", extensions=("safetensors", "ckpt")),
    _f("img_folder", str, None, "paths", "Image folder",
       "The parent folder of your image folders; each subfolder is named <repeats>_<name> (e.g. 10_mychar) and "
       "holds images with same-named caption files. The number is how often each image is seen per epoch.",
       path="folder"),
    _f("output_folder", str, None, "paths", "Output folder",
       "Where the finished LoRA, intermediate saves, the tag list and sample images are written.", path="folder"),
    _f("change_output_name", str, None, "paths", "Output name",
       "The file name of the LoRA without extension; empty means 'last', as sd-scripts names it. Epoch saves add "
       "-000001 and so on."),
    _f("reg_img_folder", str, None, "paths", "Regularization folder",
       "Optional parent folder of regularization (class) images in the same <repeats>_<name> layout; they keep "
       "the model from forgetting the class but double the steps per epoch. Empty: none.", path="folder"),
    _f("vae", str, None, "paths", "VAE",
       "Optional separate VAE to encode the training images with instead of the base model's own; empty keeps "
       "the base model's VAE, which is right for almost everyone. For SDXL in fp16, the fp16-fix VAE "
       "(sdxl.vae.safetensors of madebyollin/sdxl-vae-fp16-fix) avoids NaN images without no_half_vae's memory.",
       path="file", extensions=("pt", "safetensors", "ckpt")),
    # --- model ---------------------------------------------------------------------------------------------------
    _f("sdxl", bool, False, "model", "SDXL model",
       "The base model is SDXL or one of its descendants (Pony Diffusion, Illustrious, NoobAI): two text encoders, "
       "1024 px. Read from the model file; a settings file that says SDXL for a file of another family is refused "
       "before the model loads. Default: what the file says (off for SD 1.x and 2.x).", nullable=False,
       follows=DefaultRule(default_sdxl, _found_in_file)),
    _f("v2", bool, False, "model", "SD 2.x model",
       "Turn on when the base model is Stable Diffusion 2.x (it uses a different text encoder). Default: what the "
       "file says, off (SD 1.x) when it cannot be read.", nullable=False,
       follows=DefaultRule(default_v2, _found_in_file)),
    _f("v_parameterization", bool, False, "model", "v-prediction",
       "Turn on for v-prediction models (SD 2.x 768-v, NoobAI-XL v-pred and its merges): they were trained to "
       "predict velocity (v) instead of noise, and the LoRA must be trained with the same target. Off for SD 1.x, "
       "SD 2.x 512 and most SDXL models. Default: what the file says (modelspec.prediction_type, a v_pred key), "
       "else off.", nullable=False, follows=DefaultRule(default_v_parameterization, _found_in_file)),
    _f("zero_terminal_snr", bool, False, "model", "Zero terminal SNR",
       "Rescales the noise schedule so the last timestep is pure noise (sd-scripts' --zero_terminal_snr), as "
       "NoobAI's v-prediction models were trained; use it with v-prediction only. Default on for SDXL "
       "v-prediction models, off otherwise.", nullable=False,
       follows=DefaultRule(default_zero_terminal_snr, _follows_sdxl)),
    _f("clip_skip", int, 2, "model", "CLIP skip",
       "Which CLIP text-encoder layer conditions the image: 2 = the penultimate layer, as anime models (NovelAI "
       "lineage) are trained; 1 = the last layer, right for realistic and base SD models. Not used by SDXL, "
       "whose trainer reads fixed layers (as sd-scripts' does). Default 2.",
       nullable=False, minimum=1, maximum=12),
    _f("max_clip_token_length", int, 150, "model", "Max caption tokens",
       "How many CLIP tokens of a caption are used: 75 is one CLIP window; 150 or 225 join two or three windows "
       "so long tag lists are not cut off. Default 150.", choices=MAX_TOKEN_LENGTHS, nullable=False),
    _f("tokenizer_cache_dir", str, None, "model", "Tokenizer cache folder",
       "Optional folder for a local copy of the CLIP tokenizer; the wizard ships its tokenizer, so this is only "
       "needed for unusual setups. Empty: not used.", path="folder"),
    # --- network -------------------------------------------------------------------------------------------------
    _f("network_type", str, "LoRA", "network", "Network type",
       "The kind of adapter. " + "; ".join(f"{kind.name}: {kind.help}" for kind in NETWORK_TYPE_TABLE.values())
       + ". Default LoRA.", choices=NETWORK_TYPES, nullable=False),
    _f("net_dim", int, 32, "network", "Network dim (rank)",
       "The rank of the LoRA: how much it can learn, and its file size. 32 suits a character or a style; 8-16 "
       "is often enough; 128 makes large files that overfit easily. Default 32.", nullable=False, minimum=1),
    _f("alpha", float, 16.0, "network", "Network alpha",
       "Scales the LoRA's effect by alpha/dim (it is not a learning rate): with dim 32 and alpha 16 the update "
       "is halved, so a lower alpha needs a higher learning rate. alpha = dim disables the scaling. Default 16 "
       "(half the dim).", nullable=False, minimum=0),
    _f("conv_dim", int, 32, "network", "Conv dim",
       "For LoCon, LyCORIS LoCon, LoHa, LoKr and DyLoRA: the rank of the U-Net's 3x3 convolution layers (DyLoRA: "
       "equal to dim). LoCon needs it; empty: no convolutions are trained. Not used by LoRA and IA3. Default 32.",
       minimum=1),
    _f("conv_alpha", float, None, "network", "Conv alpha",
       "Like alpha, for the convolution layers: scales them by conv_alpha/conv_dim. Empty: equal to conv_dim "
       "(no scaling), as the popups did.", minimum=0),
    _f("unit", int, 4, "network", "DyLoRA unit",
       "DyLoRA only: ranks are trained in steps of this size (dim must be divisible by it). Default 4.",
       nullable=False, minimum=1),
    _f("use_conv_cp", bool, False, "network", "CP decomposition",
       "LyCORIS LoCon, LoHa and LoKr: factorises their 3x3 convolution weights with CP (Tucker) decomposition, "
       "which makes them smaller. Default off.", nullable=False),
    _f("dora_wd", bool, False, "network", "DoRA",
       "LyCORIS LoCon, LoHa and LoKr: DoRA (weight-decomposed low-rank adaptation) trains the direction and the "
       "magnitude of each weight apart, which often learns details better at the same rank. For LoRA with DoRA, "
       "choose LyCORIS LoCon with the preset attn-mlp. Default off.", nullable=False),
    _f("lycoris_preset", str, "full", "network", "LyCORIS preset",
       "LyCORIS types: which layers get the network. full: attention, MLP, convolutions and the U-Net's in/out "
       "layers; attn-mlp: attention and MLP (kohya LoRA's layers) and the time embedding; attn-only; unet-only; ia3: the layers "
       "LyCORIS recommends for IA3 (the popups suggest it for IA3). Default full, as in LyCORIS.",
       choices=LYCORIS_PRESETS, nullable=False),
    _f("rank_dropout", float, None, "network", "Rank dropout",
       "LyCORIS LoCon, LoHa and LoKr: the probability of dropping whole ranks of the update in each training step "
       "(0 to below 1). Empty: none.", minimum=0, maximum=0.99),
    _f("module_dropout", float, None, "network", "Module dropout",
       "LyCORIS types: the probability of skipping a layer's whole update in a training step (0 to below 1). "
       "Empty: none.", minimum=0, maximum=0.99),
    _f("lokr_factor", int, None, "network", "LoKr factor",
       "LoKr: the size of the smaller Kronecker factor of each weight; larger factors make smaller files. "
       "Empty: -1, the most balanced split.", minimum=-1),
    _f("lokr_full_matrix", bool, False, "network", "LoKr full matrix",
       "LoKr: train the larger Kronecker factor as a full matrix instead of a low-rank one (bigger files, more "
       "capacity). Default off.", nullable=False),
    _f("down_lr_weight", str, None, "network", "Down block weights",
       "Block weight training: 12 comma-separated learning-rate multipliers (0 to 1) for the U-Net's down blocks "
       "(SDXL: 9 input blocks), or one preset word (sine, cosine, linear, reverse_linear, zeros). Empty: all 1."),
    _f("mid_lr_weight", float, None, "network", "Mid block weight",
       "Block weight training: the learning-rate multiplier (usually 0 to 1) of the U-Net's middle block (SDXL: "
       "of its 3 middle blocks). Empty: 1.", minimum=0),
    _f("up_lr_weight", str, None, "network", "Up block weights",
       "Block weight training: 12 comma-separated learning-rate multipliers for the U-Net's up blocks (SDXL: 9 "
       "output blocks), or a preset word like down_lr_weight. Empty: all 1."),
    _f("block_dims", str, None, "network", "Block dims",
       "LoRA/LoCon only: 25 comma-separated ranks, one per U-Net block (12 down, 1 mid, 12 up; SDXL 23: base, 9 "
       "input, 3 middle, 9 output, out), instead of one dim for all. Empty: net_dim everywhere."),
    _f("block_alphas", str, None, "network", "Block alphas",
       "LoRA/LoCon only: 25 comma-separated alphas, one per U-Net block (SDXL 23). Empty: alpha everywhere."),
    _f("conv_block_dims", str, None, "network", "Conv block dims",
       "LoCon only: 25 comma-separated convolution ranks, one per U-Net block (SDXL 23). Empty: conv_dim "
       "everywhere."),
    _f("conv_block_alphas", str, None, "network", "Conv block alphas",
       "LoCon only: 25 comma-separated convolution alphas, one per U-Net block (SDXL 23). Empty: conv_alpha "
       "everywhere."),
    _f("unet_only", bool, False, "network", "Train U-Net only",
       "Trains only the U-Net (image) part and leaves the text encoder untouched; uses less VRAM and often "
       "suffices for styles. Default off (train both); on for SDXL, as sd-scripts advises.", nullable=False,
       follows=DefaultRule(default_unet_only, _follows_sdxl)),
    _f("text_only", bool, False, "network", "Train text encoder only",
       "Trains only the text-encoder part; rarely useful. Default off (train both).", nullable=False),
    _f("lora_model_for_resume", str, None, "network", "Continue from LoRA",
       "Optional LoRA file to continue training from (its weights are the starting point; dim and alpha must "
       "match). Empty: start fresh.", path="file", extensions=("safetensors", "pt", "ckpt")),
    _f("dim_from_weights", bool, False, "network", "Dim from resumed LoRA",
       "With 'continue from LoRA': take dim and alpha from that file instead of net_dim/alpha. Default off.",
       nullable=False),
    # --- optimizer and learning rates ----------------------------------------------------------------------------
    _f("optimizer_type", str, "AdamW8bit", "optimizer", "Optimizer",
       f"The optimizer that turns each step's gradients into weight changes. {optimizer_help()}. Settings files "
       "may also name sd-scripts' variants (DAdaptAdaGrad, DAdaptAdan, PagedAdamW, SGDScheduleFree, ...).",
       choices=OPTIMIZERS, nullable=False, default_without_cuda="AdamW"),
    _f("optimizer_args", dict, {"weight_decay": "0.1", "betas": "0.9,0.99"}, "optimizer", "Optimizer arguments",
       "Extra optimizer settings as name = value texts, passed to the optimizer as sd-scripts' --optimizer_args. "
       "Default weight_decay=0.1 and betas=0.9,0.99 (betas are dropped for optimizers without them). Choosing "
       "DAdaptation, DAdaptAdam or Prodigy adds decouple=True (weight decay as in AdamW); Prodigy also takes "
       "use_bias_correction=True and safeguard_warmup=True, which its authors advise for diffusion models (d then "
       "grows more slowly at first).",
       nullable=False),
    _f("learning_rate", float, 1e-4, "optimizer", "Learning rate",
       "How big each training step is: 1e-4 is the usual LoRA value; higher learns faster but burns in (fried "
       "colours). The DAdapt optimizers and Prodigy find their own step size and take 1.0 (set when you choose "
       "them). Default 1e-4.", nullable=False, minimum=0),
    _f("unet_lr", float, None, "optimizer", "U-Net learning rate",
       "Optional separate learning rate for the U-Net part. Empty: the learning rate.", minimum=0),
    _f("text_encoder_lr", float, None, "optimizer", "Text encoder learning rate",
       "Optional separate learning rate for the text encoder; often half the U-Net's (e.g. 5e-5). Empty: the "
       "learning rate.", minimum=0),
    _f("max_grad_norm", float, 1.0, "optimizer", "Gradient clipping",
       "Clips the gradient norm to this value to avoid sudden jumps; 0 turns clipping off. Default 1.",
       nullable=False, minimum=0),
    _f("gradient_acc_steps", int, 1, "optimizer", "Gradient accumulation",
       "Adds up the gradients of this many batches before one optimizer step: a bigger effective batch without "
       "more VRAM, but fewer steps. Default 1.", nullable=False, minimum=1),
    # --- learning-rate schedule ----------------------------------------------------------------------------------
    _f("scheduler", str, "cosine_with_restarts", "schedule", "LR scheduler",
       "How the learning rate changes over the run. Default cosine_with_restarts (the popups' default; with 1 "
       "cycle it is the same curve as cosine, the seed's ArgsList default); constant keeps it flat.",
       choices=LR_SCHEDULERS, nullable=False),
    _f("cosine_restarts", int, 1, "schedule", "Cosine restarts",
       "cosine_with_restarts only: how many cosine cycles the run has; the learning rate jumps back up between "
       "them, so 1 is a single decay. Default 1.",
       nullable=False, minimum=1),
    _f("scheduler_power", float, 1.0, "schedule", "Polynomial power",
       "polynomial only: the power of the decay curve; 1 is a straight line. Default 1.", nullable=False,
       minimum=0),
    _f("warmup_lr_ratio", float, None, "schedule", "Warmup ratio",
       "Optional share of all steps (0 to 1, e.g. 0.05) during which the learning rate rises from 0, which "
       "steadies the start; not for the constant scheduler. Empty: no warmup.", minimum=0, maximum=0.999),
    # --- length --------------------------------------------------------------------------------------------------
    _f("num_epochs", int, 1, "length", "Epochs",
       "How many passes over the dataset (each image times its folder's repeats); ignored when max_steps is "
       "set. Default 1.", nullable=False, minimum=1),
    _f("max_steps", int, None, "length", "Max steps",
       "Optional total number of training steps instead of epochs (sd-scripts' own default was 1600). Empty: "
       "train num_epochs epochs.", minimum=1),
    _f("batch_size", int, 1, "length", "Batch size",
       "Images per step: bigger batches train faster per image but need VRAM (about 6 at 512 px on 12 GB) and "
       "fewer steps. Default 1.", nullable=False, minimum=1),
    _f("test_seed", int, 23, "length", "Seed",
       "The random seed, so a run can be repeated exactly. Empty: a random seed. Default 23.", minimum=0),
    # --- dataset, resolution and buckets -------------------------------------------------------------------------
    _f("train_resolution", int, 512, "dataset", "Resolution (width)",
       "The training resolution in pixels: 512 for SD 1.x and SD 2.x-base, 768 for 768-v models, 1024 for SDXL. "
       "With buckets it is the target area, not a crop size. Default 512, 1024 for SDXL.", nullable=False,
       minimum=64, follows=DefaultRule(default_resolution, _follows_sdxl)),
    _f("height_resolution", int, None, "dataset", "Resolution height",
       "Optional height when training at a non-square resolution. Empty: the same as the width.",
       minimum=64),
    _f("buckets", bool, True, "dataset", "Aspect-ratio buckets",
       "Sorts images into buckets of similar aspect ratio so they are trained uncropped at about the same "
       "area. Default on.", nullable=False),
    _f("min_bucket_resolution", int, 320, "dataset", "Min bucket side",
       "The smallest side a bucket may have, in pixels. Default 320 at resolution 512; unless you set it, it "
       "follows the resolution (scaled, rounded down to the bucket step, never above the resolution).",
       nullable=False, minimum=8, follows=DefaultRule(default_min_bucket, _follows_resolution)),
    _f("max_bucket_resolution", int, 960, "dataset", "Max bucket side",
       "The largest side a bucket may have, in pixels. Default 960 at resolution 512; unless you set it, it "
       "follows the resolution (scaled, rounded up to the bucket step, never below the resolution).",
       nullable=False, minimum=8, follows=DefaultRule(default_max_bucket, _follows_resolution)),
    _f("bucket_reso_steps", int, 64, "dataset", "Bucket step",
       "Bucket sides are multiples of this many pixels; SD needs multiples of 64 (sd-scripts accepts multiples of "
       "8). Default 64.", nullable=False, minimum=8),
    _f("bucket_no_upscale", bool, False, "dataset", "Don't upscale",
       "Never enlarges small images to fill a bucket (each gets a bucket of its own size instead). Default off.",
       nullable=False),
    _f("cache_latents", bool, True, "dataset", "Cache latents",
       "Encodes every image with the VAE once before training: faster, less VRAM, but cannot be combined with "
       "color_aug or random_crop. Default on.", nullable=False),
    _f("cache_latents_to_disk", bool, False, "dataset", "Cache latents to disk",
       "Keeps the cached latents as .npz files beside the images so the next run skips encoding. Default off.",
       nullable=False),
    _f("cache_text_encoder_outputs", bool, False, "dataset", "Cache text-encoder outputs",
       "With the text encoders not trained (U-Net only): encodes every caption once before training (sd-scripts' "
       "--cache_text_encoder_outputs, which it has for SDXL; here for every model), so the steps no longer run "
       "the text encoders and they leave the GPU: less VRAM, faster steps. Captions must then stay the same every "
       "step (no shuffling, dropout or tag warmup). Default on for U-Net-only runs with fixed captions, off "
       "otherwise.", nullable=False,
       follows=DefaultRule(default_cache_text_encoder_outputs, _follows_frozen_text_encoders)),
    _f("cache_text_encoder_outputs_to_disk", bool, False, "dataset", "Cache text-encoder outputs to disk",
       "Keeps the cached text-encoder outputs as files beside the images, so the next run skips encoding. "
       "Default off.", nullable=False),
    _f("color_aug", bool, False, "dataset", "Colour augmentation",
       "Randomly shifts hue and gamma a little; needs cache_latents off. Default off.", nullable=False),
    _f("flip_aug", bool, False, "dataset", "Flip augmentation",
       "Randomly mirrors images left-right: more variety, but asymmetric details (a hair parting, a logo) get "
       "mixed up. Default off.", nullable=False),
    _f("random_crop", bool, False, "dataset", "Random crop",
       "Crops the overflow of a resized image at a random place instead of the centre; needs cache_latents "
       "off. Default off.", nullable=False),
    _f("prior_loss_weight", float, 1.0, "dataset", "Regularization weight",
       "How much regularization images count in the loss, relative to training images. Default 1.",
       nullable=False, minimum=0),
    _f("dataset_config", str, None, "dataset", "Dataset config TOML",
       "Optional sd-scripts dataset config (.toml) describing the datasets instead of the image folders. "
       "Empty: use the image folders.", path="file", extensions=("toml",)),
    _f("num_workers", int, 1, "dataset", "Data loader workers",
       "Background processes that decode the images and prepare the captions of the next batches while the "
       "model trains a step; 0 loads each batch in the training process, between steps. At most one per CPU "
       "core is started, and each uses some RAM. Not used while latents are cached in memory: a batch is then "
       "only picked from the cache. Default 1.", nullable=False, minimum=0, maximum=64),
    _f("persistent_workers", bool, True, "dataset", "Keep workers alive",
       "Keeps the data-loader workers between epochs, so an epoch starts without starting them again (on "
       "Windows that takes seconds per worker). Only used with 1 or more workers. Default on.",
       nullable=False),
    # --- captions ------------------------------------------------------------------------------------------------
    _f("caption_extension", str, ".txt", "captions", "Caption extension",
       "The extension of the caption files beside the images (sd-scripts' own default is .caption). "
       "Default .txt.", nullable=False),
    _f("shuffle_captions", bool, False, "captions", "Shuffle tags",
       "Shuffles the comma-separated tags of each caption every time it is used, so no tag depends on its "
       "position. Default off.", nullable=False),
    _f("keep_tokens", int, 0, "captions", "Keep first tags",
       "When shuffling (or dropping tags), the first N comma-separated tags of each caption stay in place, e.g. "
       "1 keeps your trigger word first. Default 0.", nullable=False, minimum=0),
    _f("caption_dropout_rate", float, 0.0, "captions", "Caption dropout",
       "The chance (0 to 1) that an image is trained with an empty caption, which makes the LoRA act without "
       "its trigger words too. Default 0.", nullable=False, minimum=0, maximum=1),
    _f("caption_dropout_every_n_epochs", int, 0, "captions", "Caption dropout every N epochs",
       "Trains every Nth epoch with all captions empty; 0 never. Default 0.", nullable=False, minimum=0),
    _f("caption_tag_dropout_rate", float, 0.0, "captions", "Tag dropout",
       "The chance (0 to 1) that each tag (after the kept ones) is left out of a caption. Default 0.",
       nullable=False, minimum=0, maximum=1),
    _f("token_warmup_min", int, 1, "captions", "Tag warmup minimum",
       "With tag warmup: how many tags each caption starts with. Default 1.", nullable=False, minimum=1),
    _f("token_warmup_step", float, 0.0, "captions", "Tag warmup steps",
       "Grows captions from token_warmup_min tags to all of them over this many steps (below 1: a share of all "
       "steps); 0 turns it off. Default 0.", nullable=False, minimum=0),
    _f("tag_occurrence_txt_file", bool, True, "captions", "Write tag list",
       "Writes <output name>.txt into the output folder, listing every caption tag with how often it occurs. "
       "Default on.", nullable=False),
    _f("sort_tag_occurrence_alphabetically", bool, False, "captions", "Sort tag list alphabetically",
       "Sorts the tag list by name instead of by count. Default off (most frequent first).", nullable=False),
    _f("tag_occurrence_weighted_by_repeats", bool, False, "captions", "Weight tag list by repeats",
       "Counts each tag in the tag list as often as training sees it: once per image times the repeats of its "
       "folder (10_mychar counts 10 times). Default off (once per image, as the original tool).", nullable=False),
    # --- precision, memory, attention ----------------------------------------------------------------------------
    _f("mixed_precision", str, "fp16", "precision", "Mixed precision",
       "Runs the frozen model in half precision to save VRAM and time: fp16 (default with an NVIDIA GPU), bf16 "
       "(RTX 30xx and newer, or a CPU with AVX512-BF16 or AMX, where it is about 1.6x faster than fp32), no "
       "(full fp32; the default without CUDA).", choices=MIXED_PRECISIONS,
       nullable=False, default_without_cuda="no"),
    _f("xformers", bool, True, "precision", "xformers attention",
       "Uses the xformers attention kernel when it is installed, which saves VRAM and time (not a quality "
       "setting); when off or unavailable PyTorch's scaled-dot-product attention is used. Default on with CUDA, "
       "off without.", nullable=False, default_without_cuda=False),
    _f("gradient_checkpointing", bool, False, "precision", "Gradient checkpointing",
       "Recomputes activations instead of storing them: much less VRAM, about 30% slower. Default off; for SDXL "
       "on, unless the GPU's free memory holds the run without it.", nullable=False,
       follows=DefaultRule(default_gradient_checkpointing, _follows_sdxl_memory)),
    _f("torch_compile", bool, False, "precision", "Compile the U-Net",
       "Compiles the U-Net with torch.compile (sd-scripts' --torch_compile) for faster steps on an NVIDIA GPU. The "
       "first step, and the first of each new bucket size, compile for minutes, so it pays on long runs. Default "
       "off.", nullable=False),
    _f("dynamo_backend", str, "inductor", "precision", "Compiler",
       "How torch.compile compiles the U-Net: inductor (default) generates fused GPU kernels and needs Triton, "
       "which PyTorch has on Linux but not on Windows; cudagraphs records each step's GPU work once and replays "
       "it, which helps small batches most and works on Windows too.", choices=DYNAMO_BACKENDS[:2],
       nullable=False),
    _f("no_half_vae", bool, False, "precision", "VAE in fp32",
       "Keeps the VAE in fp32 under mixed precision (sd-scripts' --no_half_vae): SDXL's own VAE overflows in fp16 "
       "and makes NaN latents and black images. Default on for SDXL in fp16 without a separate (fp16-fix) VAE, "
       "off otherwise.", nullable=False, follows=DefaultRule(default_no_half_vae, _follows_sdxl)),
    _f("noise_offset", float, None, "precision", "Noise offset",
       "Optional offset added to the training noise (e.g. 0.05 to 0.1) so the LoRA can make darker darks and "
       "brighter brights. Empty: off.", minimum=0),
    _f("multires_noise_iterations", int, None, "precision", "Multi-resolution noise",
       "Optional pyramid noise levels (6 to 10 typical), a stronger alternative to noise offset; 0 or empty: "
       "off.", minimum=0),
    _f("multires_noise_discount", float, 0.3, "precision", "Multi-resolution noise discount",
       "How much weaker each coarser pyramid-noise level is. Default 0.3.", nullable=False, minimum=0),
    _f("min_snr_gamma", float, None, "precision", "Min-SNR gamma",
       "Optional loss weighting that tones down easy, low-noise steps, which often gives cleaner results "
       "faster; 5 is the recommended value. Empty: off.", minimum=0),
    # --- saving --------------------------------------------------------------------------------------------------
    _f("save_every_n_epochs", int, None, "saving", "Save every N epochs",
       "Optional: also save the LoRA every N epochs (name-000001 and so on), to pick the best one later. "
       "Empty: only the final LoRA.", minimum=1),
    _f("save_last_n_epochs", int, None, "saving", "Keep last N saves",
       "Optional: keep only the newest N epoch saves and delete older ones. Empty: keep all.", minimum=1),
    _f("save_precision", str, "fp16", "saving", "Save precision",
       "The number format of the saved LoRA: fp16 (default, half the size, no visible loss), bf16, or float "
       "(fp32).", choices=SAVE_PRECISIONS, nullable=False),
    _f("save_as", str, "safetensors", "saving", "File format",
       "The LoRA file format: safetensors (default, safe and what every UI expects), ckpt or pt.",
       choices=SAVE_FORMATS, nullable=False),
    _f("save_state", bool, False, "saving", "Save resumable state",
       "Also saves the optimizer state beside each LoRA, so an interrupted run can be resumed exactly. Default "
       "off.", nullable=False),
    _f("resume", str, None, "saving", "Resume from state",
       "Optional state folder written by save_state to resume an interrupted run. Empty: start fresh.",
       path="folder"),
    _f("training_comment", str, None, "saving", "Comment",
       "Optional text stored in the LoRA's metadata, e.g. the trigger words. Empty: none."),
    _f("no_meta", bool, False, "saving", "No metadata",
       "Leaves out the training details (ss_* metadata such as folder names and tags) from the LoRA file, "
       "keeping only what loaders need. Default off.", nullable=False),
    _f("log_dir", str, None, "saving", "Log folder",
       "Optional folder for TensorBoard logs of loss and learning rate. Empty: no logs.", path="folder"),
    # --- sample images -------------------------------------------------------------------------------------------
    _f("sample_prompts", str, None, "sampling", "Sample prompts file",
       "Optional text file with one prompt per line (options like --n negative --w 512 --h 512 --d seed after "
       "the prompt) used to make test images while training. Empty: no samples.",
       path="file", extensions=("txt",)),
    _f("sample_sampler", str, "ddim", "sampling", "Sampler",
       "The sampler for the test images. Default ddim.", choices=SAMPLERS, nullable=False),
    _f("sample_every_n_steps", int, None, "sampling", "Sample every N steps",
       "Makes test images every N steps (the popup suggested 200). Empty: not by steps.", minimum=1),
    _f("sample_every_n_epochs", int, None, "sampling", "Sample every N epochs",
       "Makes test images every N epochs; wins over every-N-steps. Empty: not by epochs.", minimum=1),
    # --- JSON and queue ------------------------------------------------------------------------------------------
    _f("save_json_folder", str, None, "json", "Save settings to",
       "Optional folder where these settings are saved as config-<time>[-<name>].json before training. Empty: "
       "not saved.", path="folder"),
    _f("save_json_name", str, None, "json", "Settings file name",
       "Optional name appended to the saved settings file's name. Empty: config-<time>.json."),
    _f("save_json_only", bool, False, "json", "Only save settings",
       "Saves the settings JSON and stops without training (to fill a queue folder). Default off.",
       nullable=False),
    _f("settings_format", str, "json", "json", "Settings file format",
       "How Save writes the settings: json, the wizard's own file (every setting; loads back and queues here); "
       "toml, an sd-scripts --config_file that `python -m sd_scripts.train --config_file` and sd-scripts itself "
       "train (the wizard-only settings, such as the tag list, are not in it; it also loads and queues here). "
       "Default json.", choices=("json", "toml"), nullable=False),
    _f("load_json_path", str, None, "json", "Settings file to load",
       "Optional settings file to load: the wizard's JSON, a Kohya_ss GUI JSON, an sd-scripts TOML, or a LoRA "
       "whose metadata tells how it was trained; loaded settings are not asked again. Empty: none.",
       path="file", extensions=("json", "toml", "safetensors")),
    _f("json_load_skip_list", list, None, "json", "Keys not loaded",
       "Optional list of setting names a loaded JSON must not overwrite, e.g. base_model, img_folder, "
       "output_folder. Empty: load everything."),
    _f("multi_run_folder", str, None, "json", "Queue folder",
       "Optional folder of settings JSON files to train one after another, in name order. Empty: a single run.",
       path="folder"),
)

FIELD_BY_NAME: dict[str, Field] = {field.name: field for field in FIELDS}


def field_named(name: str) -> Field:
    try:
        return FIELD_BY_NAME[name]
    except KeyError:
        raise ConfigError(f"'{name}' is not a setting of this wizard; check the spelling.") from None


def check_value(field: Field, value: Any) -> Any:
    """Return `value` as stored for `field`, or raise ConfigError naming the key, the value and the expectation.

    Only lossless normalisations happen: a blank text (not a path) where the field may be unset is unset, an int
    where a float is expected becomes a float, a choice in the wrong letter case takes the declared spelling, dict
    values that are numbers or booleans become text (the optimizer reads `name=value` texts), a tuple becomes a list.
    """
    if field.type is str and field.path is None and field.nullable and isinstance(value, str) and not value.strip():
        value = None  # a blank text is "not set", as a saved JSON reads it back
    if value is None:
        if field.nullable:
            return None
        raise _error(field, value)
    if field.type is bool:
        if not isinstance(value, bool):
            raise _error(field, value)
    elif field.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(field, value)
    elif field.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _error(field, value)
        value = float(value)
    elif field.type is str:
        if not isinstance(value, str):
            raise _error(field, value)
        if field.path is not None and not value.strip():
            raise ConfigError(f"'{field.name}' is empty; choose a {field.path} or leave the setting unset.")
    elif field.type is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in value.items()
        ):
            raise _error(field, value)
        value = {key: _as_text(item) for key, item in value.items()}
    elif field.type is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            raise _error(field, value)
        value = list(value)

    if field.choices is not None:
        value = _matching_choice(field, value)
    if field.type in (int, float):
        if (field.minimum is not None and value < field.minimum) or (
            field.maximum is not None and value > field.maximum
        ):
            raise _error(field, value)
    if field.path == "file" and field.extensions:
        suffix = PurePath(value).suffix.lower().lstrip(".")
        if suffix not in field.extensions:
            raise _error(field, value)
    return value


def _matching_choice(field: Field, value: Any) -> Any:
    for choice in field.choices or ():
        if choice == value or (isinstance(value, str) and isinstance(choice, str) and choice.lower() == value.lower()):
            return choice
    raise _error(field, value)


def _as_text(value: str | int | float | bool) -> str:
    return value if isinstance(value, str) else str(value)


def _error(field: Field, value: Any) -> ConfigError:
    return ConfigError(f"'{field.name}' is {value!r}, but it must be {field.expected()}; correct it and try again.")


class TrainConfig:
    """The answers of one training run: a value and an origin for every declared field.

    Origin says where a value came from: "default" (the tuned default for this machine), "asked" (a popup
    answer) or "loaded" (a JSON or another file); the question graph skips questions whose field was loaded.
    """

    fields: tuple[Field, ...] = FIELDS  # what the walker restores on Back (a side tool's config has its own)

    def __init__(self, cuda: bool | None = None) -> None:
        if cuda is None:
            from wizard.hardware import cuda_available

            cuda = cuda_available()
        self.cuda = cuda
        self._values: dict[str, Any] = {field.name: field.default_for(cuda) for field in FIELDS}
        self._origins: dict[str, Origin] = {field.name: "default" for field in FIELDS}

    def get(self, name: str) -> Any:
        """The value; a field at its default that follows other answers (Field.follows) gives the adapted default."""
        field = field_named(name)
        if field.follows is not None and self._origins[name] == "default":
            return field.follows.value(self, field.default_for(self.cuda))
        return copy_module.deepcopy(self._values[name])

    def adjusted_default(self, name: str) -> str | None:
        """Why a field's default was adapted to the other answers ("follows the resolution 256 ..."), or None when the
        field is not at its default or its default needed no change."""
        field = field_named(name)
        if field.follows is None or self._origins[name] != "default":
            return None
        if self.get(name) == field.default_for(self.cuda):
            return None
        return field.follows.why(self)

    def set(self, name: str, value: Any, origin: Origin = "asked") -> None:
        field = field_named(name)
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, not {origin!r}")
        self._values[name] = check_value(field, copy_module.deepcopy(value))
        self._origins[name] = origin

    def reset(self, name: str) -> None:
        """Back to this machine's default (e.g. when the user undoes an answer)."""
        self._values[name] = field_named(name).default_for(self.cuda)
        self._origins[name] = "default"

    def origin(self, name: str) -> Origin:
        field_named(name)
        return self._origins[name]

    def to_dict(self) -> dict[str, Any]:
        """Every field under its seed-project name, in declaration order, plus `config_version`."""
        values: dict[str, Any] = {"config_version": CONFIG_VERSION}
        values.update({field.name: self.get(field.name) for field in FIELDS})
        return values

    def copy(self) -> "TrainConfig":
        twin = TrainConfig(cuda=self.cuda)
        twin._values = copy_module.deepcopy(self._values)
        twin._origins = dict(self._origins)
        return twin

    def __repr__(self) -> str:
        changed = {name: value for name, value in self._values.items() if self._origins[name] != "default"}
        return f"TrainConfig(cuda={self.cuda}, changed={changed})"
