"""The wizard's own settings JSON: the seed project's format (its key names, `config-<time>[-<name>].json`, indent 4)
plus a `config_version` so that later versions can migrate older files.

Files without `config_version` are the seed project's own (LoRA_Easy_Training_Scripts, spring 2023); migration 0
turns their deprecated keys (use_8bit_adam, use_lion, locon, lyco + network_args, save_at_n_epochs, ...) into the
current fields. A Kohya_ss GUI file handed to `load` is recognised and imported through `wizard.formats.kohya_gui`,
as the seed tool accepted those files too.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.kinds import KOHYA_DYLORA_MODULE, KOHYA_LORA_MODULE, LYCORIS_MODULE
from wizard.config import CONFIG_VERSION, FIELD_BY_NAME, ConfigError, TrainConfig
from wizard.formats import kohya_gui
from wizard.formats.files import read_json_object, write_text_atomically
from wizard.network_options import network_fields

# These steered the session that wrote the file (save it, only save it, load another, run a queue); loading them
# would make a queued run save instead of train, so a load leaves them as they are.
FLOW_FIELDS = ("save_json_folder", "save_json_only", "settings_format", "load_json_path", "multi_run_folder")

_UNSAFE_IN_FILE_NAMES = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


def json_file_name(timestamp: float, name: str | None, extension: str = ".json") -> str:
    """config-<time.time()>.json, or config-<time.time()>-<name>.json, as the seed project named them."""
    suffix = f"-{_UNSAFE_IN_FILE_NAMES.sub('_', name.strip())}" if name and name.strip() else ""
    return f"config-{timestamp}{suffix}{extension}"


def new_settings_path(folder: str | Path, name: str | None, extension: str) -> Path:
    """A settings file name in `folder` that is not taken yet (config-<time>[-<name>]<extension>)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserFacingError(f"The folder {folder} for the settings file does not exist; choose an existing folder.")
    timestamp = time.time()
    path = folder / json_file_name(timestamp, name, extension)
    while path.exists():
        timestamp += 1e-6
        path = folder / json_file_name(timestamp, name, extension)
    return path


def save(config: TrainConfig, folder: str | Path, name: str | None = None) -> Path:
    """Write every setting to a new file in `folder` and return its path; an existing file is never replaced."""
    text = json.dumps(config.to_dict(), indent=4, ensure_ascii=False) + "\n"
    return write_text_atomically(new_settings_path(folder, name, ".json"), text)


def load(path: str | Path, into: TrainConfig | None = None) -> tuple[TrainConfig, list[str]]:
    """Settings from `path` on top of `into` (or this machine's defaults); returns the config and the warnings.

    Loaded values get origin "loaded". Names in the current `json_load_skip_list` keep their current values;
    the flow fields (FLOW_FIELDS) are never taken from a file. An unknown key is a warning that names it; a wrong
    value is a ConfigError naming the file, the key, the value and what was expected.
    """
    path = Path(path)
    data = read_json_object(path)
    base = into.copy() if into is not None else TrainConfig()
    if kohya_gui.looks_like_kohya_gui(data):
        config, warnings = kohya_gui.config_from_data(data, path, base)
        notice = f"{path.name} is a Kohya_ss GUI settings file; it was imported through its own table."
        return config, [notice] + warnings

    warnings: list[str] = []
    version = data.pop("config_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise UserFacingError(f"In {path.name}, 'config_version' is {version!r}, but it must be a whole number; "
                              "remove it or save the settings again.")
    if version > CONFIG_VERSION:
        raise UserFacingError(f"{path.name} was saved by a newer version of the wizard (settings version {version}); "
                              "update the wizard to load it.")
    while version < CONFIG_VERSION:
        data = MIGRATIONS[version](data, warnings)
        version += 1
    return apply_settings(base, data, path.name, warnings), warnings


def apply_settings(config: TrainConfig, data: dict[str, Any], source: str, warnings: list[str]) -> TrainConfig:
    """Set each current-version key of `data` on `config` (origin "loaded"), honouring the skip list."""
    skipped = set(config.get("json_load_skip_list") or ())
    for key, value in data.items():
        field = FIELD_BY_NAME.get(key)
        if field is None:
            warnings.append(f"'{key}' in {source} is not a setting of this wizard; it was ignored.")
            continue
        if key in FLOW_FIELDS or key in skipped:
            continue
        if field.type is str and field.nullable and isinstance(value, str) and not value.strip():
            value = None  # the seed project wrote "" for paths and names it did not use
        try:
            config.set(key, value, origin="loaded")
        except ConfigError as exc:
            raise ConfigError(f"In {source}, {exc.message}") from None
    return config


# --- migrations: MIGRATIONS[n] turns a version-n dictionary into a version-(n+1) one --------------------------------

# Keys of the seed project that have no counterpart here; ignored, with a warning when they were actually in use.
SEED_KEYS_WITHOUT_COUNTERPART = (
    "lr_scheduler_type", "lr_scheduler_args", "save_n_epoch_ratio", "weighted_captions", "mem_eff_attn",
    "face_crop_aug_range", "huggingface_repo_id", "huggingface_repo_type", "huggingface_path_in_repo",
    "huggingface_token", "huggingface_repo_visibility", "save_state_to_huggingface", "resume_from_huggingface",
    "async_upload", "log_prefix", "log_with", "log_tracker_name", "wandb_api_key", "save_last_n_epochs_state",
    "lowram",
)

# Keys of the seed project that are dropped silently: a leftover of its old queue, and a value derived here.
SEED_KEYS_DROPPED = ("list_of_json_to_run", "network_module")

# The seed project wrote null for "not passed to sd-scripts"; what that meant, for the fields that need a value here.
SEED_NULL_MEANS: dict[str, Any] = {
    "keep_tokens": 0,
    "bucket_reso_steps": 64,
    "gradient_acc_steps": 1,
    "sample_sampler": "ddim",
    "token_warmup_min": 1,
    "token_warmup_step": 0.0,
    "caption_dropout_rate": 0.0,
    "caption_dropout_every_n_epochs": 0,
    "caption_tag_dropout_rate": 0.0,
    "caption_extension": ".caption",
    "clip_skip": 1,
    "max_clip_token_length": 75,
    "mixed_precision": "no",
    "save_precision": "float",
    "cosine_restarts": 1,
    "scheduler_power": 1.0,
    "multires_noise_discount": 0.3,
    "prior_loss_weight": 1.0,
    "max_grad_norm": 1.0,
    "optimizer_args": {},
}

# Old spellings of current keys.
SEED_RENAMES = {"save_at_n_epochs": "save_every_n_epochs", "sample_every_n_epoch": "sample_every_n_epochs"}


def migrate_seed_format(data: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """Version 0 (the seed project's files) -> version 1."""
    data = dict(data)
    for key in SEED_KEYS_DROPPED:
        data.pop(key, None)
    for old, new in SEED_RENAMES.items():
        if old in data:
            value = data.pop(old)
            if data.get(new) is None:
                data[new] = value

    use_8bit_adam = data.pop("use_8bit_adam", False)
    use_lion = data.pop("use_lion", False)
    if use_lion:
        data["optimizer_type"] = "Lion"
    elif use_8bit_adam:
        data["optimizer_type"] = "AdamW8bit"

    data.update(_seed_network(data, warnings))

    for key in SEED_KEYS_WITHOUT_COUNTERPART:
        value = data.pop(key, None)
        if value not in (None, False, "", 0, {}, []):
            warnings.append(f"'{key}' ({value!r}) is a setting of the original tool that this wizard does not "
                            "support; it was ignored.")
    for key, meaning in SEED_NULL_MEANS.items():
        if key in data and data[key] is None:
            data[key] = meaning
    return data


def _seed_network(data: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """lyco / locon / locon_dim / locon_alpha / network_args (popped from `data`) -> network_type and its fields."""
    lyco = data.pop("lyco", False)
    locon = data.pop("locon", False)
    locon_dim = data.pop("locon_dim", None)
    locon_alpha = data.pop("locon_alpha", None)
    network_args = data.pop("network_args", None) or {}
    if not isinstance(network_args, dict):
        raise ConfigError(f"'network_args' is {network_args!r}, but it must be a set of name = value entries; "
                          "correct it and try again.")
    network_args = dict(network_args)

    if locon:
        if locon_dim is not None:
            network_args.setdefault("conv_dim", locon_dim)
        if locon_alpha is not None:
            network_args.setdefault("conv_alpha", locon_alpha)
    if lyco:
        module = LYCORIS_MODULE
    elif "unit" in network_args:
        module = KOHYA_DYLORA_MODULE
    else:
        module = KOHYA_LORA_MODULE
    fields, ignored = network_fields(module, [f"{name}={value}" for name, value in network_args.items()])
    for name in ignored:
        warnings.append(f"The network argument '{name}' is not supported for {fields['network_type']} by this "
                        "wizard; it was ignored.")
    return fields


MIGRATIONS: dict[int, Callable[[dict[str, Any], list[str]], dict[str, Any]]] = {
    0: migrate_seed_format,
}
