"""The one translation between the wizard's settings (seed-project names) and the trainer's (kohya sd-scripts names).

`to_train_args` sets every TrainArgs field explicitly, so sd-scripts' command-line defaults (learning rate 2e-6,
".caption", 1600 steps, ...) never leak into a wizard run. `from_train_args` reads an sd-scripts configuration
back (an sd-scripts TOML, for instance); what the wizard cannot express is found by comparing the round trip, see
`wizard.formats.sd_toml`.

The warmup ratio is handed over as a ratio (TrainArgs.lr_warmup_steps below 1); the trainer resolves it against
the real number of steps, so no step counting happens here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_scripts.args import TrainArgs
from sd_scripts.errors import UserFacingError
from sd_scripts.optimizer_kinds import OPTIMIZERS_WITHOUT_BETAS  # the default betas are left out for them
from sd_scripts.models.checkpoint_header import FAMILY_NAMES
from wizard.config import ConfigError, TrainConfig, trains_sdxl
from wizard.model_family import found_family
from wizard.network_options import network_settings, read_network


# TrainArgs.max_train_steps when the run is counted in epochs: the trainer lets max_train_epochs win.
STEPS_UNUSED_WITH_EPOCHS = TrainArgs.max_train_steps


def to_train_args(config: TrainConfig) -> TrainArgs:
    """The trainer's settings for this config: every field of TrainArgs, none left to its default.

    Settings loaded for one family with a base model file of another are refused here, before any model loads.
    """
    check_family(config)
    return TrainArgs(**train_args_values(config))


def check_family(config: TrainConfig) -> None:
    """A settings file that says SDXL (or not) for a model file of the other kind: one sentence (their resolution,
    trained parts and caching are meant for the family they name)."""
    family = found_family(config.get("base_model"))
    if family is None or config.origin("sdxl") != "loaded" or family.is_sdxl == config.get("sdxl"):
        return
    said = "SDXL" if config.get("sdxl") else "SD 1.x/2.x (not SDXL)"
    found = FAMILY_NAMES[family.version]
    raise ConfigError(f"The settings are for an {said} model, but {Path(config.get('base_model')).name} is an "
                      f"{found} model; choose a base model of the family the settings were made for, or other "
                      f"settings.")


def train_args_values(config: TrainConfig) -> dict[str, Any]:
    """Every TrainArgs field by name; `to_train_args` builds from this, and a test checks it is complete."""
    c = config.get
    network_module, network_args = network_settings(config)
    counted_in_steps = c("max_steps") is not None
    return {
        # base model
        "pretrained_model_name_or_path": c("base_model") or "",
        "v2": c("v2"),
        "v_parameterization": c("v_parameterization"),
        "vae": c("vae"),
        "tokenizer_cache_dir": c("tokenizer_cache_dir"),
        "clip_skip": None if trains_sdxl(config) else c("clip_skip"),  # SDXL takes fixed layers, as in sd-scripts
        "no_half_vae": c("no_half_vae"),
        "max_token_length": None if c("max_clip_token_length") == 75 else c("max_clip_token_length"),
        # dataset
        "train_data_dir": c("img_folder"),
        "reg_data_dir": c("reg_img_folder"),
        "dataset_config": c("dataset_config"),
        "caption_extension": c("caption_extension"),
        "resolution": resolution_text(c("train_resolution"), c("height_resolution")),
        "enable_bucket": c("buckets"),
        "min_bucket_reso": c("min_bucket_resolution"),
        "max_bucket_reso": c("max_bucket_resolution"),
        "bucket_reso_steps": c("bucket_reso_steps"),
        "bucket_no_upscale": c("bucket_no_upscale"),
        "train_batch_size": c("batch_size"),
        "shuffle_caption": c("shuffle_captions"),
        "keep_tokens": c("keep_tokens"),
        "caption_dropout_rate": c("caption_dropout_rate"),
        "caption_dropout_every_n_epochs": c("caption_dropout_every_n_epochs"),
        "caption_tag_dropout_rate": c("caption_tag_dropout_rate"),
        "token_warmup_min": c("token_warmup_min"),
        "token_warmup_step": c("token_warmup_step"),
        "color_aug": c("color_aug"),
        "flip_aug": c("flip_aug"),
        "random_crop": c("random_crop"),
        "cache_latents": c("cache_latents") or c("cache_latents_to_disk"),  # the trainer caches for either
        "cache_latents_to_disk": c("cache_latents_to_disk"),
        "cache_text_encoder_outputs": c("cache_text_encoder_outputs") or c("cache_text_encoder_outputs_to_disk"),
        "cache_text_encoder_outputs_to_disk": c("cache_text_encoder_outputs_to_disk"),
        "vae_batch_size": 1,
        "prior_loss_weight": c("prior_loss_weight"),
        "max_data_loader_n_workers": c("num_workers"),
        "persistent_data_loader_workers": c("persistent_workers"),
        # network
        "network_module": network_module,
        "network_dim": c("net_dim"),
        "network_alpha": c("alpha"),
        "network_args": network_args,
        "network_weights": c("lora_model_for_resume"),
        "dim_from_weights": c("dim_from_weights"),
        "network_train_unet_only": c("unet_only"),
        "network_train_text_encoder_only": c("text_only"),
        # optimizer and learning rate
        "optimizer_type": c("optimizer_type"),
        "optimizer_args": optimizer_args_list(c("optimizer_type"), c("optimizer_args")),
        "learning_rate": c("learning_rate"),
        "unet_lr": c("unet_lr"),
        "text_encoder_lr": c("text_encoder_lr"),
        "max_grad_norm": c("max_grad_norm"),
        "use_8bit_adam": False,
        "use_lion_optimizer": False,
        "lr_scheduler": c("scheduler"),
        "lr_warmup_steps": c("warmup_lr_ratio") or 0,
        "lr_scheduler_num_cycles": c("cosine_restarts"),
        "lr_scheduler_power": c("scheduler_power"),
        # length, precision, memory
        "max_train_steps": c("max_steps") if counted_in_steps else STEPS_UNUSED_WITH_EPOCHS,
        "max_train_epochs": None if counted_in_steps else c("num_epochs"),
        "gradient_accumulation_steps": c("gradient_acc_steps"),
        "gradient_checkpointing": c("gradient_checkpointing"),
        "mixed_precision": c("mixed_precision"),
        "full_fp16": False,
        "full_bf16": False,
        "xformers": c("xformers"),
        "sdpa": not c("xformers"),
        "mem_eff_attn": False,
        "torch_compile": c("torch_compile"),
        "dynamo_backend": c("dynamo_backend"),
        "seed": c("test_seed"),
        # noise and loss
        "noise_offset": c("noise_offset"),
        "multires_noise_iterations": c("multires_noise_iterations"),
        "multires_noise_discount": c("multires_noise_discount"),
        "min_snr_gamma": c("min_snr_gamma"),
        "zero_terminal_snr": c("zero_terminal_snr"),
        # saving
        "output_dir": c("output_folder"),
        "output_name": c("change_output_name"),
        "save_model_as": c("save_as"),
        "save_precision": c("save_precision"),
        "save_every_n_epochs": c("save_every_n_epochs"),
        "save_every_n_steps": None,
        "save_last_n_epochs": c("save_last_n_epochs"),
        "save_state": c("save_state"),
        "resume": c("resume"),
        "no_metadata": c("no_meta"),
        "training_comment": c("training_comment"),
        "metadata_title": None,
        "metadata_author": None,
        "metadata_description": None,
        "metadata_license": None,
        "metadata_tags": None,
        # logging and samples
        "logging_dir": c("log_dir"),
        "log_prefix": None,
        "log_with": None,
        "log_tracker_name": None,
        "sample_prompts": c("sample_prompts"),
        "sample_every_n_steps": c("sample_every_n_steps"),
        "sample_every_n_epochs": c("sample_every_n_epochs"),
        "sample_sampler": c("sample_sampler"),
        "sample_at_first": False,
    }


def resolution_text(width: int, height: int | None) -> str:
    """sd-scripts' --resolution: "512" when square, "512,768" (width,height) otherwise."""
    return str(width) if height is None or height == width else f"{width},{height}"


def optimizer_args_list(optimizer_type: str, optimizer_args: dict[str, str]) -> list[str]:
    """The dict as sd-scripts' "key=value" list; betas left out where the optimizer has none, DAdaptation decoupled."""
    items = dict(optimizer_args)
    if optimizer_type in OPTIMIZERS_WITHOUT_BETAS:
        items.pop("betas", None)
    if optimizer_type == "DAdaptation":
        items.setdefault("decouple", "True")
    return [f"{key}={value}" for key, value in items.items()]


# --- reading a trainer configuration back ------------------------------------------------------------------------

def from_train_args(args: TrainArgs, cuda: bool | None = None) -> TrainConfig:
    """A config holding what `args` says, every value marked "loaded"; fields TrainArgs lacks keep their defaults.

    Raises ConfigError (one sentence) when a value has no place in the wizard, e.g. an unknown network module.
    """
    config = TrainConfig(cuda=cuda)

    def put(name: str, value: Any) -> None:
        config.set(name, value, origin="loaded")

    put("base_model", args.pretrained_model_name_or_path or None)
    put("v2", args.v2)
    put("v_parameterization", args.v_parameterization)
    put("vae", args.vae or None)
    put("tokenizer_cache_dir", args.tokenizer_cache_dir or None)
    put("clip_skip", args.clip_skip if args.clip_skip is not None else 1)
    put("no_half_vae", args.no_half_vae)
    put("max_clip_token_length", args.max_token_length if args.max_token_length is not None else 75)

    put("img_folder", args.train_data_dir or None)
    put("reg_img_folder", args.reg_data_dir or None)
    put("dataset_config", args.dataset_config or None)
    put("caption_extension", args.caption_extension)
    if args.resolution is not None:
        width, height = parse_resolution(args.resolution)
        put("train_resolution", width)
        put("height_resolution", height)
    put("buckets", args.enable_bucket)
    put("min_bucket_resolution", args.min_bucket_reso)
    put("max_bucket_resolution", args.max_bucket_reso)
    put("bucket_reso_steps", args.bucket_reso_steps)
    put("bucket_no_upscale", args.bucket_no_upscale)
    put("batch_size", args.train_batch_size)
    put("shuffle_captions", args.shuffle_caption)
    put("keep_tokens", args.keep_tokens)
    put("caption_dropout_rate", args.caption_dropout_rate)
    put("caption_dropout_every_n_epochs", args.caption_dropout_every_n_epochs)
    put("caption_tag_dropout_rate", args.caption_tag_dropout_rate)
    put("token_warmup_min", args.token_warmup_min)
    put("token_warmup_step", args.token_warmup_step)
    put("color_aug", args.color_aug)
    put("flip_aug", args.flip_aug)
    put("random_crop", args.random_crop)
    put("cache_latents", args.cache_latents or args.cache_latents_to_disk)
    put("cache_latents_to_disk", args.cache_latents_to_disk)
    put("cache_text_encoder_outputs", args.cache_text_encoder_outputs or args.cache_text_encoder_outputs_to_disk)
    put("cache_text_encoder_outputs_to_disk", args.cache_text_encoder_outputs_to_disk)
    put("prior_loss_weight", args.prior_loss_weight)
    put("num_workers", args.max_data_loader_n_workers)
    put("persistent_workers", args.persistent_data_loader_workers)

    put("net_dim", args.network_dim if args.network_dim is not None else 4)
    put("alpha", args.network_alpha)
    read_network(config, args.network_module, args.network_args)
    put("lora_model_for_resume", args.network_weights or None)
    put("dim_from_weights", args.dim_from_weights)
    put("unet_only", args.network_train_unet_only)
    put("text_only", args.network_train_text_encoder_only)

    put("optimizer_type", _optimizer_name(args))
    put("optimizer_args", parse_key_values(args.optimizer_args, "optimizer_args"))
    put("learning_rate", args.learning_rate)
    put("unet_lr", args.unet_lr)
    put("text_encoder_lr", args.text_encoder_lr)
    put("max_grad_norm", args.max_grad_norm)
    put("scheduler", args.lr_scheduler)
    put("warmup_lr_ratio", _warmup_ratio(args))
    put("cosine_restarts", args.lr_scheduler_num_cycles)
    put("scheduler_power", args.lr_scheduler_power)

    if args.max_train_epochs is not None:
        put("num_epochs", args.max_train_epochs)
        put("max_steps", None)
    else:
        put("max_steps", args.max_train_steps)
    put("gradient_acc_steps", args.gradient_accumulation_steps)
    put("gradient_checkpointing", args.gradient_checkpointing)
    put("mixed_precision", args.mixed_precision)
    put("xformers", args.xformers)
    put("torch_compile", args.torch_compile)
    put("dynamo_backend", args.dynamo_backend)
    put("test_seed", args.seed)

    put("noise_offset", args.noise_offset)
    put("multires_noise_iterations", args.multires_noise_iterations)
    put("multires_noise_discount", args.multires_noise_discount)
    put("min_snr_gamma", args.min_snr_gamma)
    put("zero_terminal_snr", args.zero_terminal_snr)

    put("output_folder", args.output_dir or None)
    put("change_output_name", args.output_name or None)
    put("save_as", args.save_model_as)
    put("save_precision", args.save_precision if args.save_precision is not None else "float")
    put("save_every_n_epochs", args.save_every_n_epochs or None)
    put("save_last_n_epochs", args.save_last_n_epochs or None)
    put("save_state", args.save_state)
    put("resume", args.resume or None)
    put("no_meta", args.no_metadata)
    put("training_comment", args.training_comment or None)

    put("log_dir", args.logging_dir or None)
    put("sample_prompts", args.sample_prompts or None)
    put("sample_every_n_steps", args.sample_every_n_steps or None)
    put("sample_every_n_epochs", args.sample_every_n_epochs or None)
    put("sample_sampler", args.sample_sampler)
    return config


def parse_resolution(text: str) -> tuple[int, int | None]:
    """"512" -> (512, None); "512,768" -> (512, 768); a square "512,512" -> (512, None)."""
    parts = [part.strip() for part in str(text).split(",")]
    try:
        numbers = [int(float(part)) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2):
        raise ConfigError(f"The resolution {text!r} is not understood; write it as 512 or as width,height like "
                          "512,768.")
    width = numbers[0]
    height = numbers[1] if len(numbers) == 2 and numbers[1] != width else None
    return width, height


def parse_key_values(items: list[str], setting: str) -> dict[str, str]:
    """["weight_decay=0.1", "betas=0.9,0.99"] -> {"weight_decay": "0.1", "betas": "0.9,0.99"} (split at the first =)."""
    values: dict[str, str] = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"The {setting} entry {item!r} is not of the form name=value; correct it and try "
                              "again.")
        values[key.strip()] = value.strip()
    return values


def _optimizer_name(args: TrainArgs) -> str:
    if args.optimizer_type:
        return args.optimizer_type
    if args.use_8bit_adam and args.use_lion_optimizer:
        raise UserFacingError("use_8bit_adam and use_lion_optimizer are both set; choose one optimizer with "
                              "optimizer_type.")
    return "AdamW8bit" if args.use_8bit_adam else "Lion" if args.use_lion_optimizer else "AdamW"


def _warmup_ratio(args: TrainArgs) -> float | None:
    """A ratio stays a ratio; a step count becomes a ratio of max_train_steps when the run is counted in steps."""
    warmup = args.lr_warmup_steps
    if not warmup:
        return None
    if warmup < 1:
        return float(warmup)
    if args.max_train_epochs is None and args.max_train_steps and warmup < args.max_train_steps:
        return warmup / args.max_train_steps
    return None
