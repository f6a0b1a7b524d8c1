"""The trainer's settings, under kohya sd-scripts' own names and with its defaults.

`TrainArgs` is the whole input of `sd_scripts.train`. Each field is declared once here, with the type and default
that sd-scripts' `train_network.py` gives it, so that an sd-scripts `--config_file` TOML, the `ss_*` metadata of a
LoRA and this class map onto each other one to one. The wizard fills every field explicitly through its own
translation table; defaults here only matter for the command line (`python -m sd_scripts.train`).

This module must stay free of heavy imports: the wizard imports it on the way to the first popup.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sd_scripts.errors import UserFacingError

LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)
# The optimizers' names, with what each takes, are declared in sd_scripts.optimizer_kinds.
MIXED_PRECISIONS = ("no", "fp16", "bf16")
# torch.compile's backends (training/compilation.py); the wizard offers the first two, the others only trace.
DYNAMO_BACKENDS = ("inductor", "cudagraphs", "aot_eager", "eager")
SAVE_PRECISIONS = ("float", "fp16", "bf16")
SAVE_FORMATS = ("safetensors", "ckpt", "pt")
SAMPLERS = ("ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++",
            "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a")
# The samplers whose diffusers scheduler can rescale its betas to zero terminal SNR (`rescale_betas_zero_snr`).
ZERO_TERMINAL_SNR_SAMPLERS = ("ddim", "euler", "euler_a", "dpmsolver", "dpmsolver++", "k_euler", "k_euler_a")


def _list() -> Any:
    return field(default_factory=list)


@dataclass
class TrainArgs:
    # --- base model ---------------------------------------------------------------------------------------------
    pretrained_model_name_or_path: str = ""
    v2: bool = False
    v_parameterization: bool = False
    vae: str | None = None
    tokenizer_cache_dir: str | None = None
    clip_skip: int | None = None
    max_token_length: int | None = None  # None = 75; 150 or 225 enable window chunking
    no_half_vae: bool = False  # the VAE in fp32 under mixed precision (SDXL's VAE overflows in fp16)

    # --- dataset ------------------------------------------------------------------------------------------------
    train_data_dir: str | None = None
    reg_data_dir: str | None = None
    dataset_config: str | None = None
    caption_extension: str = ".caption"
    resolution: str | None = None  # "512" or "512,768" (width,height)
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    train_batch_size: int = 1
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    token_warmup_min: int = 1
    token_warmup_step: float = 0
    color_aug: bool = False
    flip_aug: bool = False
    random_crop: bool = False
    cache_latents: bool = False
    cache_latents_to_disk: bool = False
    cache_text_encoder_outputs: bool = False  # SDXL, text encoders not trained: encode each caption once
    cache_text_encoder_outputs_to_disk: bool = False  # ... and keep them in *_te_outputs.npz next to the images
    vae_batch_size: int = 1
    prior_loss_weight: float = 1.0
    max_data_loader_n_workers: int = 8
    persistent_data_loader_workers: bool = False

    # --- network ------------------------------------------------------------------------------------------------
    network_module: str = "networks.lora"
    network_dim: int | None = None  # None = 4, as sd-scripts
    network_alpha: float = 1.0
    network_args: list[str] = _list()  # "key=value" strings, e.g. "conv_dim=8", "algo=loha"
    network_weights: str | None = None  # a LoRA to continue training from
    dim_from_weights: bool = False
    network_train_unet_only: bool = False
    network_train_text_encoder_only: bool = False

    # --- optimizer and learning rate ----------------------------------------------------------------------------
    optimizer_type: str = ""  # "" = AdamW
    optimizer_args: list[str] = _list()  # "key=value" strings, e.g. "weight_decay=0.1", "betas=0.9,0.99"
    learning_rate: float = 2e-6
    unet_lr: float | None = None
    text_encoder_lr: float | None = None
    max_grad_norm: float = 1.0
    use_8bit_adam: bool = False  # deprecated spelling of optimizer_type=AdamW8bit
    use_lion_optimizer: bool = False  # deprecated spelling of optimizer_type=Lion
    lr_scheduler: str = "constant"
    lr_warmup_steps: float = 0  # an int number of steps, or a float below 1 meaning a ratio of the total
    lr_scheduler_num_cycles: int = 1
    lr_scheduler_power: float = 1.0

    # --- length, precision, memory ------------------------------------------------------------------------------
    max_train_steps: int = 1600
    max_train_epochs: int | None = None  # when set, wins over max_train_steps
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    full_fp16: bool = False
    full_bf16: bool = False
    xformers: bool = False
    sdpa: bool = False
    mem_eff_attn: bool = False
    torch_compile: bool = False  # torch.compile the U-Net for the training steps (training/compilation.py)
    dynamo_backend: str = "inductor"  # its backend: inductor, cudagraphs, aot_eager or eager
    seed: int | None = None

    # --- noise and loss -----------------------------------------------------------------------------------------
    noise_offset: float | None = None
    multires_noise_iterations: int | None = None
    multires_noise_discount: float = 0.3
    min_snr_gamma: float | None = None
    zero_terminal_snr: bool = False  # rescale the betas so the last timestep is pure noise (v-prediction models)

    # --- saving -------------------------------------------------------------------------------------------------
    output_dir: str | None = None
    output_name: str | None = None  # None = "last"
    save_model_as: str = "safetensors"
    save_precision: str | None = None  # None = as trained (fp32)
    save_every_n_epochs: int | None = None
    save_every_n_steps: int | None = None
    save_last_n_epochs: int | None = None
    save_state: bool = False
    resume: str | None = None  # a state folder written by save_state
    no_metadata: bool = False
    training_comment: str | None = None
    metadata_title: str | None = None
    metadata_author: str | None = None
    metadata_description: str | None = None
    metadata_license: str | None = None
    metadata_tags: str | None = None

    # --- logging and samples ------------------------------------------------------------------------------------
    logging_dir: str | None = None
    log_prefix: str | None = None
    log_with: str | None = None
    log_tracker_name: str | None = None
    sample_prompts: str | None = None
    sample_every_n_steps: int | None = None
    sample_every_n_epochs: int | None = None
    sample_sampler: str = "ddim"
    sample_at_first: bool = False

    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: dict[str, Any], source: str = "settings") -> tuple["TrainArgs", list[str]]:
        """Build from kohya-named values; returns the args and the names of keys this trainer does not know.

        Types are checked and mild coercions applied (an int where a float is expected, "1e-4" strings from
        hand-written files). A wrong type raises UserFacingError naming the key, the value and what was expected.
        """
        known = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in values.items():
            if key not in known:
                unknown.append(key)
                continue
            kwargs[key] = coerce(key, value, hints[key], source)
        return cls(**kwargs), unknown

    @classmethod
    def from_toml(cls, path: str | Path) -> tuple["TrainArgs", list[str]]:
        """Read an sd-scripts `--config_file` TOML; tables (sections) are flattened as sd-scripts does."""
        data = read_toml(path)
        return cls.from_mapping(flatten_sections(data), source=str(path))

    def to_mapping(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UserFacingError(f"The settings file {path} does not exist; check the path and try again.") from None
    except UnicodeDecodeError:
        raise UserFacingError(f"The settings file {path} is not UTF-8 text (TOML always is); save it again as "
                              "UTF-8.") from None
    except OSError as exc:
        raise UserFacingError(f"The settings file {path} cannot be read ({exc.strerror}); check it and try "
                              "again.") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserFacingError(f"The settings file {path} is not valid TOML ({exc}); fix that line or save it again.") from None


def flatten_sections(data: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts lets a config file group keys in tables ([model_arguments], ...); only the leaves count."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten_sections(value))
        else:
            flat[key] = value
    return flat


def coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    """Check `value` against the declared type `hint`, converting the harmless cases."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise _type_error(key, value, hint, source)
    for kind in allowed:
        if kind is type(None):
            continue
        origin = typing.get_origin(kind) or kind
        if origin is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
        elif origin is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    pass
        elif origin is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value.strip())
                except ValueError:
                    pass
        elif origin is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
        elif origin is list:
            if isinstance(value, (list, tuple)):
                return [str(item) for item in value]
            if isinstance(value, str):
                return value.split()
    raise _type_error(key, value, hint, source)


def _type_error(key: str, value: Any, hint: Any, source: str) -> UserFacingError:
    expected = str(hint).replace("typing.", "").replace("NoneType", "nothing")
    return UserFacingError(f"In {source}, '{key}' is {value!r}, but it must be {expected}; correct it and try again.")
