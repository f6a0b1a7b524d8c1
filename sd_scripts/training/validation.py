"""Checks on the settings before anything heavy is loaded, each failing with one sentence the user can act on."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sd_scripts.args import (
    LR_SCHEDULERS,
    MIXED_PRECISIONS,
    SAVE_FORMATS,
    SAVE_PRECISIONS,
    ZERO_TERMINAL_SNR_SAMPLERS,
    TrainArgs,
)
from sd_scripts.dataset.folders import parse_folder_name
from sd_scripts.dataset.plan import DatasetPlan
from sd_scripts.errors import UserFacingError
from sd_scripts.models.checkpoint_header import PICKLE_SUFFIXES, check_complete, check_model_files
from sd_scripts.models.checkpoint_header import read_model_family
from sd_scripts.networks.blocks import block_lr_weights, block_ranks
from sd_scripts.networks.file_kinds import (
    file_lycoris_algo,
    file_network_module,
    read_file_keys,
    require_file_fits_model,
)
from sd_scripts.networks.kinds import LYCORIS_MODULE, network_type_of, parse_network_args
from sd_scripts.optimizer_kinds import (
    check_optimizer_options,
    complete_options,
    follows_lr_schedule,
    optimizer_class,
    parse_optimizer_args,
    resolve_optimizer,
)
from sd_scripts.training.logs import check_log_settings

ADAFACTOR_SCHEDULER = "adafactor"  # sd-scripts' scheduler that reports Adafactor's relative step


def validate_args(args: TrainArgs) -> None:
    """Raise UserFacingError for the first setting that cannot work."""
    if not args.pretrained_model_name_or_path:
        raise UserFacingError("No base model is set; choose the Stable Diffusion model file to train on.")
    if not args.train_data_dir and not args.dataset_config:
        raise UserFacingError("No image folder is set; choose the folder that holds your N_name image folders.")
    if not args.output_dir:
        raise UserFacingError("No output folder is set; choose where the LoRA should be saved.")
    if args.lr_scheduler != ADAFACTOR_SCHEDULER:  # sd-scripts' extra name, checked with the optimizer
        _check_choice("lr_scheduler", args.lr_scheduler, LR_SCHEDULERS)
    _check_choice("mixed_precision", args.mixed_precision, MIXED_PRECISIONS)
    _check_choice("save_model_as", args.save_model_as, SAVE_FORMATS)
    if args.save_precision is not None:
        _check_choice("save_precision", args.save_precision, SAVE_PRECISIONS)
    options = parse_network_args(args.network_module, args.network_args)
    block_ranks(options, dim=args.network_dim or 4, alpha=args.network_alpha, conv_dim=options.get("conv_dim"),
                conv_alpha=options.get("conv_alpha"))  # per-block values that cannot work, found before loading
    unit = options.get("unit")
    if unit is not None:
        for name, dim in (("network_dim", args.network_dim), ("conv_dim", options.get("conv_dim"))):
            if dim is not None and dim % unit:
                raise UserFacingError(f"DyLoRA trains ranks in steps of unit={unit}, but {name} is {dim}; "
                                      f"choose a {name} divisible by {unit}.")
    is_adafactor = args.optimizer_type.strip().lower() == "adafactor"
    if args.learning_rate <= 0 and not is_adafactor:
        raise UserFacingError(f"The learning rate is {args.learning_rate}; it must be above 0, for a LoRA usually 1e-4.")
    for name in ("unet_lr", "text_encoder_lr"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UserFacingError(f"{name} is {value}; it must be 0 (do not train that part) or more.")
    if args.network_train_unet_only and args.network_train_text_encoder_only:
        raise UserFacingError("network_train_unet_only and network_train_text_encoder_only are both set: training "
                              "only the U-Net and only the text encoder at once is impossible; choose one.")
    _check_optimizer(args, options)
    if args.cache_latents or args.cache_latents_to_disk:
        if args.color_aug:
            raise UserFacingError("Colour augmentation (color_aug) cannot be used with cached latents (cache_latents); turn one of them off.")
        if args.random_crop:
            raise UserFacingError("Random crop (random_crop) cannot be used with cached latents (cache_latents); turn one of them off.")
    _check_text_encoder_caching(args)
    if args.zero_terminal_snr and args.sample_prompts:
        check_zero_terminal_snr_sampler(args.sample_sampler)
    _check_at_least("max_train_steps", args.max_train_steps, 1)
    _check_at_least("max_train_epochs", args.max_train_epochs, 1)
    _check_at_least("train_batch_size", args.train_batch_size, 1)
    _check_at_least("gradient_accumulation_steps", args.gradient_accumulation_steps, 1)
    _check_at_least("network_dim", args.network_dim, 1)
    _check_at_least("clip_skip", args.clip_skip, 1)
    _check_at_least("save_every_n_epochs", args.save_every_n_epochs, 1)
    _check_at_least("save_every_n_steps", args.save_every_n_steps, 1)
    _check_at_least("save_last_n_epochs", args.save_last_n_epochs, 1)
    # 0 means no samples, as the Kohya_ss GUI writes it (the loop samples only on a positive interval).
    _check_at_least("sample_every_n_epochs", args.sample_every_n_epochs, 0)
    _check_at_least("sample_every_n_steps", args.sample_every_n_steps, 0)
    if args.network_alpha < 0:
        raise UserFacingError(f"network_alpha is {args.network_alpha}; it must be 0 or more (often 1 or half the dim).")
    if args.max_token_length not in (None, 75, 150, 225):
        raise UserFacingError(f"max_token_length is {args.max_token_length}; choose 75, 150 or 225.")
    if args.min_snr_gamma is not None and args.min_snr_gamma < 0:  # 0 is off, as in sd-scripts
        raise UserFacingError(f"min_snr_gamma is {args.min_snr_gamma}; it must be 0 (off) or above (5 is usual).")
    if args.noise_offset is not None and args.noise_offset < 0:
        raise UserFacingError(f"noise_offset is {args.noise_offset}; it must be 0 or more (0.05 to 0.1 is usual).")
    if args.max_grad_norm < 0:
        raise UserFacingError(f"max_grad_norm is {args.max_grad_norm}; it must be 0 (no clipping) or more.")
    for name in ("network_weights", "sample_prompts"):
        value = getattr(args, name)
        if value and not Path(value).is_file():
            raise UserFacingError(f"The {name.replace('_', ' ')} file {value} does not exist; check the path.")
    if args.network_weights and args.network_weights.endswith(".safetensors"):
        _check_weights_fit_network(args)
    if args.resume and not Path(args.resume).is_dir():
        raise UserFacingError(f"The state folder to resume from, {args.resume}, does not exist; check the path.")
    check_log_settings(args)


def check_output_folder(args: TrainArgs) -> None:
    """The output folder lies outside the image folders (samples and LoRAs saved in a numbered image folder would be
    trained by the next run; a folder beside them without a number is ignored by the scan) and can be written:
    probed with a nameless temporary file, which also tells a read-only drive or a network share without rights,
    where permission bits do not."""
    if not args.output_dir:
        return
    output = Path(args.output_dir).expanduser().resolve()
    for what, folder in (("training image folder", args.train_data_dir), ("regularization image folder",
                                                                         args.reg_data_dir)):
        parent = Path(folder).expanduser().resolve() if folder else None
        if parent is None or not output.is_relative_to(parent):
            continue
        below = output.relative_to(parent).parts
        if not below or parse_folder_name(below[0]) is not None:  # the folder itself, or in a numbered image folder
            raise UserFacingError(
                f"The output folder {args.output_dir} is inside the {what} {folder}; choose an output folder outside "
                "it, or the samples and LoRA files would be mixed with your images and trained by the next run.")
    existing = output
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserFacingError(f"The output folder {args.output_dir} cannot be made because {existing} is a file; "
                              "choose another output folder.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        raise UserFacingError(f"The output folder {existing} cannot be written to (it is read-only, or you have no "
                              "rights there); choose another output folder or change its permissions.") from None


def check_input_files(args: TrainArgs) -> None:
    """The files the run will read, checked from their headers without loading them: the base model and VAE
    (`check_model_files`), and any pickle among the network weights and the state to resume, which must name only
    tensors (they are loaded with weights_only=True too; this says so before the model loads)."""
    check_model_files(args.pretrained_model_name_or_path, args.vae)
    pickles = [Path(args.network_weights)] if args.network_weights else []
    if args.resume and Path(args.resume).is_dir():
        pickles += sorted(Path(args.resume).iterdir())
    for path in pickles:
        if path.suffix.lower() in PICKLE_SUFFIXES and path.is_file():
            check_complete(path)


def caches_text_encoder_outputs(args: TrainArgs) -> bool:
    """sd-scripts turns the memory cache on when only the disk cache is asked for; so does this trainer."""
    return args.cache_text_encoder_outputs or args.cache_text_encoder_outputs_to_disk


def _check_text_encoder_caching(args: TrainArgs) -> None:
    """sd-scripts' rule: cached outputs cannot follow a trained text encoder. (Captions that change from step to
    step are checked per folder once the dataset is read: `ensure_text_encoder_outputs_cacheable`.)"""
    if caches_text_encoder_outputs(args) and not args.network_train_unet_only:
        raise UserFacingError("Text-encoder outputs can only be cached when the text encoders are not trained; "
                              "train the U-Net only (network_train_unet_only) or turn the caching off.")


def check_zero_terminal_snr_sampler(sampler: str) -> None:
    """Samples of a zero-terminal-SNR run need a sampler whose diffusers scheduler can rescale its betas."""
    if sampler.lower() not in ZERO_TERMINAL_SNR_SAMPLERS:
        raise UserFacingError(f"The sampler '{sampler}' cannot sample with zero terminal SNR; choose one of "
                              f"{', '.join(ZERO_TERMINAL_SNR_SAMPLERS)}.")


def check_settings_for_model(args: TrainArgs, plan: DatasetPlan, sdxl: bool, v_parameterization: bool) -> list[str]:
    """The settings that depend on the loaded model's family; returns notes for the user (sd-scripts' warnings)."""
    notes = []
    if args.zero_terminal_snr and not v_parameterization:
        notes.append("zero_terminal_snr is on for a model that predicts noise (not v-prediction); sd-scripts warns "
                     "that such a training gives unexpected results.")
    if not sdxl:
        return notes
    odd = sorted({bucket.resolution for dataset in plan.datasets for bucket in dataset.buckets
                  if bucket.resolution[0] % 32 or bucket.resolution[1] % 32})
    if odd:
        raise UserFacingError(f"SDXL trains at sizes in multiples of 32, but some images would train at "
                              f"{odd[0][0]}x{odd[0][1]}; set the resolution and bucket_reso_steps to multiples of 32 "
                              "(64 is usual).")
    if args.clip_skip is not None:
        notes.append("clip_skip is not used for SDXL (as in sd-scripts): SDXL always takes the penultimate layer.")
    return notes


def _check_optimizer(args: TrainArgs, network_options: dict) -> None:
    """The optimizer's package, class and options, and the learning rates it takes, without building it."""
    kind = resolve_optimizer(args.optimizer_type, args.use_8bit_adam, args.use_lion_optimizer)
    options = complete_options(kind, parse_optimizer_args(args.optimizer_args))
    check_optimizer_options(kind, optimizer_class(kind), options)
    if args.lr_scheduler == ADAFACTOR_SCHEDULER and follows_lr_schedule(kind, options):
        raise UserFacingError("The adafactor scheduler only reports AdaFactor's own learning rate (relative_step); "
                              "choose another scheduler, or AdaFactor as the optimizer.")
    if kind.one_learning_rate:
        rates = _trained_learning_rates(args, network_options)
        if len(rates) > 1:
            raise UserFacingError(
                f"{kind.name} takes one learning rate for every part it trains, but these settings give "
                f"{', '.join(f'{rate:g}' for rate in sorted(rates))} (unet_lr, text_encoder_lr or block weights); "
                "give them all the same learning rate, usually 1.0."
            )


def _trained_learning_rates(args: TrainArgs, network_options: dict) -> set[float]:
    """The non-zero learning rates of the optimizer's groups, as the network's prepare_optimizer_params makes them."""
    rates = set()
    if not args.network_train_unet_only:
        rates.add(args.learning_rate if args.text_encoder_lr is None else args.text_encoder_lr)
    if not args.network_train_text_encoder_only:
        unet_lr = args.learning_rate if args.unet_lr is None else args.unet_lr
        rates.update(unet_lr * weight for weight in block_lr_weights(network_options) or (1.0,))
    rates.discard(0.0)
    return rates


def _check_weights_fit_network(args: TrainArgs) -> None:
    """A LoRA to continue from must be made for the base model's family (SDXL or SD 1.x/2.x, from both files'
    headers), and of the network type being trained unless its own shape is taken."""
    try:
        keys, metadata = read_file_keys(args.network_weights)
    except UserFacingError as unreadable:
        raise UserFacingError(f"The LoRA to continue from (network_weights) cannot be used: {unreadable}") from None
    family = read_model_family(args.pretrained_model_name_or_path)
    if family.version is not None:  # a .ckpt's family is known once it loads, where the network checks it again
        require_file_fits_model(f"The LoRA to continue from, {Path(args.network_weights).name},", keys, metadata,
                                model_is_sdxl=family.is_sdxl)
    if args.dim_from_weights:
        return
    module = file_network_module(keys, metadata)
    algo = file_lycoris_algo(keys) if module == LYCORIS_MODULE else None
    kind = network_type_of(args.network_module, args.network_args)
    if module != kind.module or (algo is not None and algo != kind.algo):
        found = network_type_of(module, [f"algo={algo}"] if algo else []).name
        raise UserFacingError(
            f"The LoRA to continue from, {Path(args.network_weights).name}, is a {found} network but this training "
            f"is set up for {kind.name}; choose {found} as the network type, or take the dims from the file "
            "(dim_from_weights)."
        )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserFacingError(f"{name} is '{value}', which is not one of {', '.join(choices)}; choose one of those.")


def _check_at_least(name: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise UserFacingError(f"{name} is {value}; it must be at least {minimum}.")
