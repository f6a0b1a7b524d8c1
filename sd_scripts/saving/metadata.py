"""The `ss_*` and `modelspec.*` metadata of a LoRA file, under the keys and in the formats sd-scripts writes.

LoRA browsers (A1111's and Forge's LoRA tabs, civitai, sd-webui-additional-networks) read these keys to show how a
LoRA was trained, so every value is a string and nested values are JSON strings, as in sd-scripts.

Inputs are explicit: the `TrainArgs`, the dataset's own `ss_*` keys (`DatasetPlan.metadata()`), a `TrainingRun`
with what the loop decided at its start, and the progress at the moment of saving. Keys of sd-scripts features this
trainer does not have carry the value that says "off" (e.g. `ss_ip_noise_gamma` = "None"), which is the truth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sd_scripts.args import TrainArgs
from sd_scripts.saving.hashes import file_sha256, legacy_model_hash

DEFAULT_NETWORK_DIM = 4  # sd-scripts' value when network_dim is not given

# `--no_metadata` keeps only these (sd-scripts' SS_METADATA_MINIMUM_KEYS): enough for a reader to load the LoRA.
MINIMUM_KEYS = (
    "ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args"
)

# What `DatasetPlan.metadata()` must provide: the numbers and JSON descriptions only the dataset scan knows.
# Folder mode (train_data_dir) describes its one dataset; a --dataset_config run lists its datasets in ss_datasets.
DATASET_COUNT_KEYS = ("ss_num_train_images", "ss_num_reg_images", "ss_num_batches_per_epoch")
FOLDER_MODE_DATASET_KEYS = DATASET_COUNT_KEYS + (
    "ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_tag_frequency", "ss_bucket_info"
)
DATASET_CONFIG_KEYS = DATASET_COUNT_KEYS + ("ss_datasets", "ss_dataset_dirs", "ss_tag_frequency")

ARCHITECTURES = {
    "sd_v1": "stable-diffusion-v1/lora",
    "sd_v2": "stable-diffusion-v2-512/lora",
    "sd_v2_v": "stable-diffusion-v2-768-v/lora",
    "sdxl_base_v1-0": "stable-diffusion-xl-v1-base/lora",  # eps and v-prediction alike, as sd-scripts writes it
}
NATIVE_RESOLUTIONS = {"sd_v1": 512, "sd_v2": 512, "sd_v2_v": 768, "sdxl_base_v1-0": 1024}
# sd-scripts' modelspec.implementation: Stability AI's repository for an SDXL LoRA (sai_model_spec), else diffusers.
IMPLEMENTATIONS = {"sdxl_base_v1-0": "https://github.com/Stability-AI/generative-models"}
MODELSPEC_VERSION = "1.0.1"  # what sd-scripts' sai_model_spec writes today
# sd-scripts writes "sd-scripts/<git commit>", or this when it cannot tell the commit: this trainer is no checkout.
IMPLEMENTATION_VERSION = "sd-scripts/unknown"

# Keys today's sd-scripts writes for settings this trainer has no choice of, with the values of what it does:
# the l2 loss (the huber settings are sd-scripts' defaults, unused by l2), no validation split, and the default
# resize interpolation (None: area averaging when shrinking, Lanczos when enlarging, as dataset/images.py does).
FIXED_SETTINGS = {
    "ss_loss_type": "l2",
    "ss_huber_schedule": "snr",
    "ss_huber_scale": 1.0,
    "ss_huber_c": 0.1,
    "ss_num_validation_images": 0,
    "ss_validation_seed": None,
    "ss_validation_split": 0.0,
    "ss_max_validation_steps": None,
    "ss_validate_every_n_epochs": None,
    "ss_validate_every_n_steps": None,
    "ss_resize_interpolation": None,
}


@dataclass(frozen=True)
class TrainingRun:
    """What the training loop knows once it has started, beyond TrainArgs; fixed for the whole run."""

    session_id: int  # random.randint(0, 2**32), as sd-scripts
    started_at: float  # time.time() when training started
    base_model_version: str  # BaseModel.version, read from the file: "sd_v1" | "sd_v2" | "sd_v2_v" | "sdxl_base_v1-0"
    num_epochs: int
    max_train_steps: int  # after max_train_epochs was turned into steps
    lr_warmup_steps: int  # after a ratio was turned into steps
    optimizer: str  # "module.Class(k=v,...)", BuiltOptimizer.description
    model_files: Mapping[str, str]  # model_file_metadata(): names and hashes of the base model and VAE
    num_processes: int = 1
    v_parameterization: bool = False  # what the run trained: an SDXL model's version does not say it


def model_file_metadata(model_path: str | Path, vae_path: str | Path | None = None) -> dict[str, str]:
    """Name and hashes of the base model (and VAE): ss_sd_model_name/_hash, ss_new_sd_model_hash, ss_vae_*.

    Hashing a multi-GB file takes seconds, so the loop calls this once per run. Folders (diffusers models) get
    their name only: the A1111 hashes are defined for single files.
    """
    metadata = _file_metadata(Path(model_path), "ss_sd_model_name", "ss_sd_model_hash", "ss_new_sd_model_hash")
    if vae_path is not None:
        metadata.update(_file_metadata(Path(vae_path), "ss_vae_name", "ss_vae_hash", "ss_new_vae_hash"))
    return metadata


def _file_metadata(path: Path, name_key: str, hash_key: str, new_hash_key: str) -> dict[str, str]:
    metadata = {name_key: path.name}
    if path.is_file():
        metadata[hash_key] = legacy_model_hash(path)
        metadata[new_hash_key] = file_sha256(path)
    return metadata


def training_metadata(
    args: TrainArgs,
    dataset_metadata: Mapping[str, str],
    run: TrainingRun,
    *,
    steps: int,
    epoch: int,
    saved_at: float,
) -> dict[str, str]:
    """All `ss_*` and `modelspec.*` keys for a LoRA saved after `steps` steps in `epoch`; only MINIMUM_KEYS
    when `args.no_metadata` is set."""
    network = _network_metadata(args, run.base_model_version)
    if args.no_metadata:
        return network

    folder_mode = args.dataset_config is None
    required = FOLDER_MODE_DATASET_KEYS if folder_mode else DATASET_CONFIG_KEYS
    missing = [key for key in required if key not in dataset_metadata]
    if missing:
        raise ValueError(f"The dataset metadata lacks {', '.join(missing)}.")
    not_strings = [key for key, value in dataset_metadata.items() if not isinstance(value, str)]
    if not_strings:
        raise ValueError(f"Dataset metadata values must be strings (JSON for nested ones): {', '.join(not_strings)}.")

    metadata = {
        "ss_session_id": run.session_id,
        "ss_training_started_at": run.started_at,
        "ss_output_name": args.output_name,
        "ss_learning_rate": args.learning_rate,
        "ss_text_encoder_lr": args.text_encoder_lr,
        "ss_unet_lr": args.unet_lr,
        "ss_num_epochs": run.num_epochs,
        "ss_gradient_checkpointing": args.gradient_checkpointing,
        "ss_gradient_accumulation_steps": args.gradient_accumulation_steps,
        "ss_max_train_steps": run.max_train_steps,
        "ss_lr_warmup_steps": run.lr_warmup_steps,
        "ss_lr_scheduler": args.lr_scheduler,
        "ss_mixed_precision": args.mixed_precision,
        "ss_full_fp16": args.full_fp16,
        "ss_clip_skip": args.clip_skip,
        "ss_max_token_length": args.max_token_length,
        # sd-scripts turns cache_latents on when cache_latents_to_disk is (train_util.verify_training_args)
        "ss_cache_latents": args.cache_latents or args.cache_latents_to_disk,
        "ss_seed": args.seed,
        "ss_lowram": False,  # the base model is always loaded into RAM first (there is no lowram setting)
        "ss_noise_offset": args.noise_offset,
        "ss_multires_noise_iterations": args.multires_noise_iterations,
        "ss_multires_noise_discount": args.multires_noise_discount,
        "ss_training_comment": args.training_comment,
        "ss_sd_scripts_commit_hash": "(unknown)",  # this trainer is not an sd-scripts checkout
        "ss_optimizer": run.optimizer,
        "ss_max_grad_norm": args.max_grad_norm,
        "ss_caption_dropout_rate": args.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": args.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": args.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": None,  # face-crop augmentation is not offered
        "ss_prior_loss_weight": args.prior_loss_weight,
        "ss_min_snr_gamma": args.min_snr_gamma,
        "ss_zero_terminal_snr": args.zero_terminal_snr,
        # Keys sd-scripts added after spring 2023, for features this trainer does not have: their "off" values.
        **FIXED_SETTINGS,
        "ss_network_dropout": None,
        "ss_adaptive_noise_scale": None,
        "ss_scale_weight_norms": None,
        "ss_ip_noise_gamma": None,
        "ss_debiased_estimation": False,
        "ss_noise_offset_random_strength": False,
        "ss_ip_noise_gamma_random_strength": False,
        "ss_fp8_base": False,
        "ss_fp8_base_unet": False,
        # Updated at every save.
        "ss_training_finished_at": saved_at,
        "ss_steps": steps,
        "ss_epoch": epoch,
    }
    if folder_mode:  # with --dataset_config these settings are per dataset, inside ss_datasets
        metadata.update(
            {
                "ss_batch_size_per_device": args.train_batch_size,
                "ss_total_batch_size": args.train_batch_size * run.num_processes * args.gradient_accumulation_steps,
                "ss_resolution": _resolution(args, run.base_model_version),
                "ss_color_aug": args.color_aug,
                "ss_flip_aug": args.flip_aug,
                "ss_random_crop": args.random_crop,
                "ss_shuffle_caption": args.shuffle_caption,
                "ss_enable_bucket": args.enable_bucket,
                "ss_bucket_no_upscale": args.bucket_no_upscale,
                "ss_min_bucket_reso": args.min_bucket_reso,
                "ss_max_bucket_reso": args.max_bucket_reso,
                "ss_keep_tokens": args.keep_tokens,
            }
        )
    strings = {key: str(value) for key, value in metadata.items()}
    strings.update(dataset_metadata)
    strings.update(run.model_files)
    strings.update(network)
    strings.update(_modelspec(args, run, saved_at))
    return strings


def _network_metadata(args: TrainArgs, base_model_version: str) -> dict[str, str]:
    """The MINIMUM_KEYS: what a reader needs to load the file (module, rank, alpha, conv args, model family).

    `ss_network_args` is left out when there are none, as sd-scripts leaves it out.
    """
    metadata = {
        "ss_network_module": args.network_module,
        "ss_network_dim": str(args.network_dim if args.network_dim is not None else DEFAULT_NETWORK_DIM),
        "ss_network_alpha": str(args.network_alpha),
        "ss_v2": str(base_model_version in ("sd_v2", "sd_v2_v")),
        "ss_base_model_version": base_model_version,
    }
    if args.network_args:
        pairs = (argument.partition("=") for argument in args.network_args)
        metadata["ss_network_args"] = json.dumps({key: value for key, _, value in pairs})
    return metadata


def _resolution(args: TrainArgs, base_model_version: str) -> tuple[int, int]:
    """(width, height) as sd-scripts prints it: "512" means (512, 512); unset means the family's native size."""
    if args.resolution is None:
        side = NATIVE_RESOLUTIONS[base_model_version]
        return side, side
    sizes = [int(size) for size in args.resolution.split(",")]
    return sizes[0], sizes[-1]


def _modelspec(args: TrainArgs, run: TrainingRun, saved_at: float) -> dict[str, str]:
    """Stability AI's ModelSpec keys, as sd-scripts writes them for an SD1/SD2/SDXL LoRA."""
    base_model_version = run.base_model_version
    width, height = _resolution(args, base_model_version)
    v_prediction = run.v_parameterization or base_model_version == "sd_v2_v"
    title = args.metadata_title or args.output_name or f"LoRA@{datetime.fromtimestamp(saved_at):%Y-%m-%d %H:%M:%S}"
    spec = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": ARCHITECTURES[base_model_version],
        "modelspec.implementation": IMPLEMENTATIONS.get(base_model_version, "diffusers"),
        "modelspec.title": title,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": datetime.fromtimestamp(int(saved_at)).isoformat(),  # whole seconds, as sd-scripts
        "modelspec.prediction_type": "v" if v_prediction else "epsilon",
        "modelspec.implementation_version": IMPLEMENTATION_VERSION,
    }
    if args.clip_skip is not None:
        spec["modelspec.encoder_layer"] = str(args.clip_skip)
    optional = {
        "modelspec.author": args.metadata_author,
        "modelspec.description": args.metadata_description,
        "modelspec.license": args.metadata_license,
        "modelspec.tags": args.metadata_tags,
    }
    spec.update({key: value for key, value in optional.items() if value})
    return spec
