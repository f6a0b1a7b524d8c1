"""Import of a Kohya_ss GUI (bmaltais/kohya_ss) LoRA settings JSON through a real mapping.

The GUI's files differ from ours in more than names: numbers are often strings ("0.0001"), "" means "not set",
`lr_warmup` is a percentage of the steps, `optimizer_args` is one string ("weight_decay=0.1 betas=0.9,0.99"),
`sample_prompts` is the prompt text itself, and the network type is a `LoRA_type` label. The seed project copied
keys through a rename table and lost or broke these; here each one is converted.

`sample_prompts` text is written to `<json name>-sample-prompts.txt` beside the imported JSON (the folder the user
chose to read from, and where they will look), because the trainer reads prompts from a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from wizard.config import ConfigError, TrainConfig
from wizard.formats.files import read_json_object, write_text_atomically
from wizard.translate import parse_resolution

UNSET: Any = object()  # the GUI's "" / null: keep the wizard's value


class _Reader:
    """Converters from the GUI's loosely typed values; each returns UNSET for "" and null."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"In {self.source}, '{key}' is {value!r}, but it must be {expected}; correct it in the "
                           "Kohya_ss GUI or in the file and try again.")

    def text(self, key: str, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return UNSET
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(key, value, "text")
        return str(value).strip()

    def number(self, key: str, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return UNSET
        if isinstance(value, bool):
            raise self.fail(key, value, "a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise self.fail(key, value, "a number") from None

    def whole(self, key: str, value: Any) -> Any:
        number = self.number(key, value)
        if number is UNSET:
            return UNSET
        if not number.is_integer():
            raise self.fail(key, value, "a whole number")
        return int(number)

    def flag(self, key: str, value: Any) -> Any:
        if value is None or value == "":
            return UNSET
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.fail(key, value, "true or false")

    def whole_or_off(self, key: str, value: Any) -> Any:
        """Counts where the GUI writes 0 for "off" (sample every 0 steps, save every 0 epochs)."""
        number = self.whole(key, value)
        return None if number == 0 else number

    def layer(self, key: str, value: Any) -> Any:
        """CLIP skip: the GUI's slider starts at 0, which it passes as "not set", sd-scripts' last layer (1)."""
        number = self.whole(key, value)
        return 1 if number == 0 else number

    def number_or_off(self, key: str, value: Any) -> Any:
        number = self.number(key, value)
        return None if number == 0 else number


# GUI key -> (wizard field, converter name) for the keys that only need a type conversion.
PLAIN_KEYS: dict[str, tuple[str, str]] = {
    "v2": ("v2", "flag"),
    "v_parameterization": ("v_parameterization", "flag"),
    "sdxl": ("sdxl", "flag"),  # the GUI's SDXL check box; the family itself is read from the model file
    "sdxl_cache_text_encoder_outputs": ("cache_text_encoder_outputs", "flag"),
    "sdxl_no_half_vae": ("no_half_vae", "flag"),
    "logging_dir": ("log_dir", "text"),
    "train_data_dir": ("img_folder", "text"),
    "reg_data_dir": ("reg_img_folder", "text"),
    "output_dir": ("output_folder", "text"),
    "vae": ("vae", "text"),
    "learning_rate": ("learning_rate", "number"),
    "lr_scheduler": ("scheduler", "text"),
    "train_batch_size": ("batch_size", "whole"),
    "save_every_n_epochs": ("save_every_n_epochs", "whole_or_off"),
    "save_last_n_epochs": ("save_last_n_epochs", "whole_or_off"),
    "mixed_precision": ("mixed_precision", "text"),
    "save_precision": ("save_precision", "text"),
    "seed": ("test_seed", "whole"),
    "cache_latents": ("cache_latents", "flag"),
    "cache_latents_to_disk": ("cache_latents_to_disk", "flag"),
    "caption_extension": ("caption_extension", "text"),
    "enable_bucket": ("buckets", "flag"),
    "min_bucket_reso": ("min_bucket_resolution", "whole"),
    "max_bucket_reso": ("max_bucket_resolution", "whole"),
    "bucket_reso_steps": ("bucket_reso_steps", "whole"),
    "bucket_no_upscale": ("bucket_no_upscale", "flag"),
    "gradient_checkpointing": ("gradient_checkpointing", "flag"),
    "save_model_as": ("save_as", "text"),
    "shuffle_caption": ("shuffle_captions", "flag"),
    "save_state": ("save_state", "flag"),
    "resume": ("resume", "text"),
    "prior_loss_weight": ("prior_loss_weight", "number"),
    "network_dim": ("net_dim", "whole"),
    "network_alpha": ("alpha", "number"),
    "lora_network_weights": ("lora_model_for_resume", "text"),
    "dim_from_weights": ("dim_from_weights", "flag"),
    "color_aug": ("color_aug", "flag"),
    "flip_aug": ("flip_aug", "flag"),
    "random_crop": ("random_crop", "flag"),
    "clip_skip": ("clip_skip", "layer"),
    "gradient_accumulation_steps": ("gradient_acc_steps", "whole"),
    "output_name": ("change_output_name", "text"),
    "max_token_length": ("max_clip_token_length", "whole"),
    "max_data_loader_n_workers": ("num_workers", "whole"),
    "persistent_data_loader_workers": ("persistent_workers", "flag"),
    "training_comment": ("training_comment", "text"),
    "keep_tokens": ("keep_tokens", "whole"),
    "lr_scheduler_num_cycles": ("cosine_restarts", "whole"),
    "lr_scheduler_power": ("scheduler_power", "number"),
    "caption_dropout_every_n_epochs": ("caption_dropout_every_n_epochs", "whole"),
    "caption_dropout_rate": ("caption_dropout_rate", "number"),
    "caption_tag_dropout_rate": ("caption_tag_dropout_rate", "number"),
    "noise_offset": ("noise_offset", "number_or_off"),
    "multires_noise_iterations": ("multires_noise_iterations", "whole_or_off"),
    "multires_noise_discount": ("multires_noise_discount", "number"),
    "min_snr_gamma": ("min_snr_gamma", "number_or_off"),
    "sample_every_n_steps": ("sample_every_n_steps", "whole_or_off"),
    "sample_every_n_epochs": ("sample_every_n_epochs", "whole_or_off"),
    "sample_sampler": ("sample_sampler", "text"),
    "down_lr_weight": ("down_lr_weight", "text"),
    "mid_lr_weight": ("mid_lr_weight", "number"),
    "up_lr_weight": ("up_lr_weight", "text"),
    "block_dims": ("block_dims", "text"),
    "block_alphas": ("block_alphas", "text"),
    "conv_dims": ("conv_block_dims", "text"),
    "conv_alphas": ("conv_block_alphas", "text"),
}

# Keys converted by their own functions below.
SPECIAL_KEYS = (
    "pretrained_model_name_or_path", "max_resolution", "lr_warmup", "epoch", "max_train_epochs", "max_train_steps",
    "text_encoder_lr", "unet_lr", "optimizer", "use_8bit_adam", "optimizer_args", "LoRA_type", "conv_dim",
    "conv_alpha", "unit", "sample_prompts", "xformers",
)

# GUI keys with no counterpart: ignored, with a warning only when they hold a value that mattered.
IGNORED_KEYS = (
    "full_fp16", "no_token_padding", "stop_text_encoder_training", "additional_parameters", "weighted_captions",
    "block_lr_zero_threshold", "save_every_n_steps", "save_last_n_steps", "save_last_n_steps_state", "use_wandb",
    "wandb_api_key", "scale_v_pred_loss_like_noise_pred", "network_dropout", "rank_dropout", "module_dropout",
    "mem_eff_attn", "face_crop_aug_range", "log_prefix",
)
# GUI keys that only steer the GUI itself (its model picker, accelerate's CPU threads, the VAE batch): always ignored.
GUI_ONLY_KEYS = ("model_list", "num_cpu_threads_per_process", "vae_batch_size")

LORA_TYPES = {
    "Standard": "LoRA",
    "LoCon": "LyCORIS LoCon",  # the GUI's spring-2023 LoCon was LyCORIS' (lycoris.kohya, algo=locon)
    "Kohya LoCon": "LoCon",
    "LyCORIS/LoCon": "LyCORIS LoCon",
    "LyCORIS/LoHa": "LoHa",
    "LyCORIS/iA3": "IA3",
    "LyCORIS/LoKr": "LoKr",
    "Kohya DyLoRA": "DyLoRA",
    "LyCORIS/DyLoRA": "DyLoRA",
}

BASE_MODEL_SUFFIXES = (".safetensors", ".ckpt")


def looks_like_kohya_gui(data: dict[str, Any]) -> bool:
    """A Kohya_ss GUI file: its own key names and none of ours."""
    return "base_model" not in data and any(key in data for key in ("pretrained_model_name_or_path", "LoRA_type",
                                                                     "max_resolution"))


def load(path: str | Path, into: TrainConfig | None = None) -> tuple[TrainConfig, list[str]]:
    """Settings from a Kohya_ss GUI JSON on top of `into` (or the defaults); returns the config and the warnings."""
    path = Path(path)
    base = into.copy() if into is not None else TrainConfig()
    return config_from_data(read_json_object(path), path, base)


def config_from_data(data: dict[str, Any], path: Path, config: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """Apply the GUI's settings `data` (read from `path`) to `config`, in place; returns it and the warnings."""
    reader = _Reader(path.name)
    warnings: list[str] = []
    skipped = set(config.get("json_load_skip_list") or ())

    def put(field: str, value: Any, key: str) -> None:
        if value is UNSET or field in skipped:
            return
        try:
            config.set(field, value, origin="loaded")
        except ConfigError as exc:
            raise ConfigError(f"In {path.name} (Kohya_ss key '{key}'), {exc.message}") from None

    converters: dict[str, Callable[[str, Any], Any]] = {
        name: getattr(reader, name)
        for name in ("text", "number", "whole", "flag", "whole_or_off", "number_or_off", "layer")
    }
    for key, (field, converter) in PLAIN_KEYS.items():
        if key in data:
            put(field, converters[converter](key, data[key]), key)

    _base_model(data, reader, put, warnings)
    _resolution(data, reader, put)
    _warmup(data, reader, put)
    _length(data, reader, put)
    _learning_rates(data, reader, put)
    _optimizer(data, reader, put)
    _network(data, reader, put)
    _attention(data, put)
    _sample_prompts(data, reader, put, path)

    unused = [key for key in IGNORED_KEYS if data.get(key) not in (None, False, "", 0, "0", 0.0)]
    if unused:
        warnings.append(f"These Kohya_ss GUI settings have no counterpart in the wizard and were ignored: "
                        f"{', '.join(unused)}.")
    known = set(PLAIN_KEYS) | set(SPECIAL_KEYS) | set(IGNORED_KEYS) | set(GUI_ONLY_KEYS)
    unknown = [key for key in data if key not in known]
    if unknown:
        warnings.append(f"These keys of {path.name} are unknown to the wizard and were ignored: {', '.join(unknown)}.")
    return config, warnings


Put = Callable[[str, Any, str], None]


def _base_model(data: dict[str, Any], reader: _Reader, put: Put, warnings: list[str]) -> None:
    """A file path is taken; a Hugging Face name (the GUI's default runwayml/...) cannot be, the wizard is offline."""
    name = reader.text("pretrained_model_name_or_path", data.get("pretrained_model_name_or_path"))
    if name is UNSET:
        return
    if name.lower().endswith(BASE_MODEL_SUFFIXES):
        put("base_model", name, "pretrained_model_name_or_path")
    else:
        warnings.append(f"The base model '{name}' is a Hugging Face model name, not a file; choose the base model "
                        ".safetensors or .ckpt file in the wizard.")


def _resolution(data: dict[str, Any], reader: _Reader, put: Put) -> None:
    """max_resolution "512,512" -> width 512 (square); "768,512" -> width 768, height 512."""
    text = reader.text("max_resolution", data.get("max_resolution"))
    if text is UNSET:
        return
    width, height = parse_resolution(text)
    put("train_resolution", width, "max_resolution")
    put("height_resolution", height, "max_resolution")


def _warmup(data: dict[str, Any], reader: _Reader, put: Put) -> None:
    """lr_warmup is a percentage of the steps in the GUI (10 = 10%); the wizard keeps a ratio (0.1)."""
    percent = reader.number("lr_warmup", data.get("lr_warmup"))
    if percent is UNSET:
        return
    if not 0 <= percent < 100:
        raise reader.fail("lr_warmup", data["lr_warmup"], "a percentage from 0 to 99")
    put("warmup_lr_ratio", percent / 100 if percent else None, "lr_warmup")


def _length(data: dict[str, Any], reader: _Reader, put: Put) -> None:
    """epoch, overridden by max_train_epochs when set; max_train_steps when set counts the run in steps."""
    epochs = reader.whole("epoch", data.get("epoch"))
    max_epochs = reader.whole("max_train_epochs", data.get("max_train_epochs"))
    if max_epochs not in (UNSET, 0):
        epochs = max_epochs
    put("num_epochs", epochs, "epoch")
    max_steps = reader.whole("max_train_steps", data.get("max_train_steps"))
    if max_steps not in (UNSET, 0):
        put("max_steps", max_steps, "max_train_steps")


def _learning_rates(data: dict[str, Any], reader: _Reader, put: Put) -> None:
    """As the GUI does: a text-encoder rate of 0 trains the U-Net only, a U-Net rate of 0 the text encoder only."""
    text_encoder_lr = reader.number("text_encoder_lr", data.get("text_encoder_lr"))
    unet_lr = reader.number("unet_lr", data.get("unet_lr"))
    if text_encoder_lr == 0 and unet_lr == 0:
        raise reader.fail("unet_lr", data["unet_lr"], "above 0 when text_encoder_lr is 0")
    if text_encoder_lr == 0:
        put("unet_only", True, "text_encoder_lr")
    else:
        put("text_encoder_lr", text_encoder_lr, "text_encoder_lr")
    if unet_lr == 0:
        put("text_only", True, "unet_lr")
    else:
        put("unet_lr", unet_lr, "unet_lr")


def _optimizer(data: dict[str, Any], reader: _Reader, put: Put) -> None:
    """`optimizer` wins; old GUI files only had the use_8bit_adam check box."""
    name = reader.text("optimizer", data.get("optimizer"))
    if name is UNSET and "use_8bit_adam" in data:
        name = "AdamW8bit" if reader.flag("use_8bit_adam", data["use_8bit_adam"]) is True else "AdamW"
    put("optimizer_type", name, "optimizer")
    if "optimizer_args" in data:
        put("optimizer_args", parse_optimizer_args(data["optimizer_args"], reader), "optimizer_args")


def parse_optimizer_args(value: Any, reader: _Reader) -> dict[str, str]:
    """"weight_decay=0.1 betas=0.9,0.99" -> {"weight_decay": "0.1", "betas": "0.9,0.99"}; "" -> no arguments.

    A piece without "=" continues the previous value, so "betas=0.9, 0.99" reads as one value.
    """
    if value is None:
        return {}
    if not isinstance(value, str):
        raise reader.fail("optimizer_args", value, 'text like "weight_decay=0.1 betas=0.9,0.99"')
    arguments: dict[str, str] = {}
    last_key: str | None = None
    for piece in value.split():
        key, separator, item = piece.partition("=")
        if separator and key:
            last_key = key
            arguments[key] = item.strip("\"'")
        elif last_key is not None:
            arguments[last_key] += piece.strip("\"'")
        else:
            raise reader.fail("optimizer_args", value, 'name=value pairs like "weight_decay=0.1 betas=0.9,0.99"')
    return arguments


def _network(data: dict[str, Any], reader: _Reader, put: Put) -> None:
    """LoRA_type + conv_dim / conv_alpha / unit -> network type and its settings (conv ignored for Standard)."""
    label = reader.text("LoRA_type", data.get("LoRA_type"))
    network_type = "LoRA" if label is UNSET else LORA_TYPES.get(label)
    if network_type is None:
        raise reader.fail("LoRA_type", label, "one of " + ", ".join(LORA_TYPES))
    put("network_type", network_type, "LoRA_type")
    if network_type in ("LoCon", "LyCORIS LoCon", "LoHa", "LoKr", "DyLoRA"):
        put("conv_dim", reader.whole("conv_dim", data.get("conv_dim")), "conv_dim")
        put("conv_alpha", reader.number("conv_alpha", data.get("conv_alpha")), "conv_alpha")
    if network_type == "DyLoRA":
        put("unit", reader.whole("unit", data.get("unit")), "unit")


def _attention(data: dict[str, Any], put: Put) -> None:
    """Older GUIs: a check box; newer: a choice "xformers" / "sdpa" / "none"."""
    value = data.get("xformers")
    if isinstance(value, bool):
        put("xformers", value, "xformers")
    elif isinstance(value, str) and value.strip():
        put("xformers", value.strip().lower() == "xformers", "xformers")


def _sample_prompts(data: dict[str, Any], reader: _Reader, put: Put, path: Path) -> None:
    """The GUI stores the prompts themselves; the trainer reads a file, written beside the imported JSON."""
    text = reader.text("sample_prompts", data.get("sample_prompts"))
    if text is UNSET:
        return
    if text.lower().endswith(".txt") and "\n" not in text and Path(text).is_file():
        put("sample_prompts", text, "sample_prompts")
        return
    put("sample_prompts", str(write_prompts_file(text, path)), "sample_prompts")


def write_prompts_file(text: str, imported: Path) -> Path:
    """<json stem>-sample-prompts.txt beside `imported`; reused when it already holds these prompts, else numbered."""
    content = text.replace("\r\n", "\n").rstrip("\n") + "\n"
    number = 1
    while True:
        suffix = "" if number == 1 else f"-{number}"
        candidate = imported.with_name(f"{imported.stem}-sample-prompts{suffix}.txt")
        if not candidate.exists():
            return write_text_atomically(candidate, content).resolve()
        if candidate.read_text(encoding="utf-8", errors="replace") == content:
            return candidate.resolve()
        number += 1
