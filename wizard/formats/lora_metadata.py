""""Train again like this LoRA": the settings a LoRA's `ss_*` metadata holds, read back into the wizard's config.

sd-scripts (and this trainer, under the same keys, see `sd_scripts.saving.metadata`) writes every value as a string,
"None" for unset, nested values as JSON. The metadata holds the training settings but not the paths: the base model
and the output folder are asked again. The image folders are known by their names only (`ss_dataset_dirs`:
"10_mychar"); they are taken when a folder beside the LoRA (its folder, or up to two folders above, or one of their
subfolders) holds all of them, else asked. Settings the metadata does not hold (captions' extension, the scheduler's
cycles, ...) stay at the wizard's defaults, so the popups ask them.

A LoRA may come from anyone: every metadata value quoted in a note goes through `sd_scripts.untrusted.shown`
(control characters escaped, 200 characters at most), and the two text settings taken over (output name, training
comment) are checked like typed answers: an output name must be a plain file name, a comment at most
`MAX_LOADED_TEXT` characters of printable text.

The run length comes back as the user counted it: in epochs when `ss_max_train_steps` is what that many epochs give
(sd-scripts' formula), else in steps; either way the same dataset gives the same `ss_max_train_steps`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.file_kinds import read_file_keys
from sd_scripts.untrusted import shown
from wizard.config import OPTIMIZERS, ConfigError, TrainConfig
from wizard.network_options import network_fields

NONE = "None"


MAX_LOADED_TEXT = 1000  # characters of a training comment taken over from a LoRA


def _text(value: str) -> str | None:
    """A printable text setting; a value with control characters or longer than MAX_LOADED_TEXT is not taken."""
    if value in (NONE, ""):
        return None
    if len(value) > MAX_LOADED_TEXT or shown(value, MAX_LOADED_TEXT) != value:
        raise ValueError(value)
    return value


def _file_name(value: str) -> str | None:
    """An output name: a plain file name, never a path (a LoRA must not choose where the next one is written)."""
    name = _text(value)
    if name is not None and (Path(name).name != name or name in (".", "..") or "\\" in name):
        raise ValueError(value)
    return name


def _number(value: str) -> float | None:
    return None if value in (NONE, "") else float(value)


def _whole(value: str) -> int | None:
    return None if value in (NONE, "") else int(float(value))


def _flag(value: str) -> bool:
    if value not in ("True", "False"):
        raise ValueError(value)
    return value == "True"


def _off_when_zero(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """sd-scripts' "0 means off" values (noise offset, multires iterations, min-SNR gamma) -> the wizard's None."""
    return lambda value: convert(value) or None


def _none_means(meaning: Any, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """Values sd-scripts leaves unset with a meaning (clip_skip None = the last layer, max_token_length None = 75)."""
    return lambda value: meaning if value in (NONE, "") else convert(value)


# metadata key -> (wizard field, converter of the metadata string).
PLAIN_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "ss_output_name": ("change_output_name", _file_name),
    "ss_learning_rate": ("learning_rate", float),
    "ss_text_encoder_lr": ("text_encoder_lr", _number),
    "ss_unet_lr": ("unet_lr", _number),
    "ss_gradient_checkpointing": ("gradient_checkpointing", _flag),
    "ss_gradient_accumulation_steps": ("gradient_acc_steps", int),
    "ss_lr_scheduler": ("scheduler", str),
    "ss_mixed_precision": ("mixed_precision", str),
    "ss_clip_skip": ("clip_skip", _none_means(1, int)),
    "ss_max_token_length": ("max_clip_token_length", _none_means(75, int)),
    "ss_cache_latents": ("cache_latents", _flag),
    "ss_seed": ("test_seed", _whole),
    "ss_noise_offset": ("noise_offset", _off_when_zero(_number)),
    "ss_multires_noise_iterations": ("multires_noise_iterations", _off_when_zero(_whole)),
    "ss_multires_noise_discount": ("multires_noise_discount", float),
    "ss_training_comment": ("training_comment", _text),
    "ss_max_grad_norm": ("max_grad_norm", float),
    "ss_caption_dropout_rate": ("caption_dropout_rate", float),
    "ss_caption_dropout_every_n_epochs": ("caption_dropout_every_n_epochs", int),
    "ss_caption_tag_dropout_rate": ("caption_tag_dropout_rate", float),
    "ss_prior_loss_weight": ("prior_loss_weight", float),
    "ss_min_snr_gamma": ("min_snr_gamma", _off_when_zero(_number)),
    # folder mode only (with --dataset_config these are per dataset, inside ss_datasets)
    "ss_batch_size_per_device": ("batch_size", int),
    "ss_color_aug": ("color_aug", _flag),
    "ss_flip_aug": ("flip_aug", _flag),
    "ss_random_crop": ("random_crop", _flag),
    "ss_shuffle_caption": ("shuffle_captions", _flag),
    "ss_enable_bucket": ("buckets", _flag),
    "ss_bucket_no_upscale": ("bucket_no_upscale", _flag),
    "ss_min_bucket_reso": ("min_bucket_resolution", int),
    "ss_max_bucket_reso": ("max_bucket_resolution", int),
    "ss_keep_tokens": ("keep_tokens", int),
}

# ss_optimizer names the class ("module.Class(k=v,...)"); the optimizer types whose class has another name.
OPTIMIZER_OF_CLASS = {
    "sgd": "SGDNesterov", "sgd8bit": "SGDNesterov8bit", "dadaptadampreprint": "DAdaptation", "lion32bit": "Lion",
}

# A folder holding the image folders is looked for this many levels above the LoRA's own folder.
FOLDER_SEARCH_LEVELS = 2


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file: an 8-byte little-endian header length that fits the file, then a JSON object."""
    return len(head) > 8 and 0 < int.from_bytes(head[:8], "little") < size and head[8:9] == b"{"


def load(path: str | Path, into: TrainConfig | None = None) -> tuple[TrainConfig, list[str]]:
    """The settings `path`'s metadata holds on top of `into` (or the defaults); returns the config and notes."""
    path = Path(path)
    _keys, metadata = read_file_keys(path)
    if not any(key.startswith("ss_") for key in metadata):
        raise UserFacingError(f"{path.name} holds no training settings (no ss_* metadata); choose a LoRA trained "
                              "with sd-scripts, the Kohya_ss GUI or this wizard.")
    config = into.copy() if into is not None else TrainConfig()
    notes: list[str] = []

    def put(field: str, value: Any, key: str) -> None:
        try:
            config.set(field, value, origin="loaded")
        except ConfigError as exc:
            notes.append(f"'{key}' ({shown(metadata[key])}) in {path.name} cannot be used: {shown(exc.message)}")

    for key, (field, convert) in PLAIN_KEYS.items():
        if key in metadata:
            try:
                value = convert(metadata[key])
            except ValueError:
                notes.append(f"'{key}' in {path.name} is '{shown(metadata[key])}', which is not understood; it is "
                             "asked.")
                continue
            put(field, value, key)
    readers: list[tuple[str, Callable[[], None]]] = [
        ("base model", lambda: _model(metadata, put, notes)),
        ("resolution", lambda: _resolution(metadata, put)),
        ("length", lambda: _length(metadata, put)),
        ("network", lambda: _network(metadata, put, notes, path.name)),
        ("optimizer", lambda: _optimizer(metadata, put, notes)),
        ("image folders", lambda: _folders(metadata, put, notes, path)),
    ]
    for what, read in readers:
        try:
            read()
        except (ValueError, TypeError, OverflowError, AttributeError):  # a value no trainer wrote: asked instead
            notes.append(f"The {what} settings in the metadata of {path.name} are not understood; they are asked.")
    if "ss_datasets" in metadata:
        notes.append(f"{path.name} was trained from a dataset config; its per-dataset settings (batch size, "
                     "resolution, buckets, caption options) are asked.")
    return config, notes


def _model(metadata: dict[str, str], put: Callable[[str, Any, str], None], notes: list[str]) -> None:
    version = metadata.get("ss_base_model_version", "")
    if "ss_v2" in metadata:
        put("v2", _flag(metadata["ss_v2"]), "ss_v2")
    if version.startswith("sd_v2") or version == "sd_v1":
        put("v_parameterization", version == "sd_v2_v", "ss_base_model_version")
    elif version:
        notes.append(f"The LoRA was trained on a {shown(version)} model, which this wizard does not train.")
    name = metadata.get("ss_sd_model_name")
    if name:
        notes.append(f"It was trained on the base model {shown(name)}; choose that model (or another) again.")
    if metadata.get("ss_full_fp16") == "True":
        notes.append("It was trained with full_fp16, which this wizard does not offer; mixed precision is used.")


def _resolution(metadata: dict[str, str], put: Callable[[str, Any, str], None]) -> None:
    """ss_resolution "(512, 768)" is (width, height)."""
    sizes = re.findall(r"\d+", metadata.get("ss_resolution", ""))
    if len(sizes) == 2:
        width, height = int(sizes[0]), int(sizes[1])
        put("train_resolution", width, "ss_resolution")
        put("height_resolution", None if height == width else height, "ss_resolution")


def _length(metadata: dict[str, str], put: Callable[[str, Any, str], None]) -> None:
    """Epochs when sd-scripts' epoch formula gives ss_max_train_steps, else steps; warmup steps as their ratio."""
    steps = _whole(metadata.get("ss_max_train_steps", NONE))
    if steps is None:
        return
    epochs = _whole(metadata.get("ss_num_epochs", NONE))
    batches = _whole(metadata.get("ss_num_batches_per_epoch", NONE))
    accumulation = _whole(metadata.get("ss_gradient_accumulation_steps", "1")) or 1
    if epochs and batches and epochs * math.ceil(batches / accumulation) == steps:
        put("num_epochs", epochs, "ss_num_epochs")
        put("max_steps", None, "ss_max_train_steps")
    else:
        put("max_steps", steps, "ss_max_train_steps")
    warmup = _whole(metadata.get("ss_lr_warmup_steps", NONE)) or 0
    put("warmup_lr_ratio", warmup_ratio(warmup, steps), "ss_lr_warmup_steps")


def warmup_ratio(warmup_steps: int, total_steps: int) -> float | None:
    """The smallest ratio that the trainer turns back into exactly `warmup_steps` (int(total * ratio))."""
    if not warmup_steps:
        return None
    ratio = warmup_steps / total_steps
    while int(total_steps * ratio) < warmup_steps:
        ratio = math.nextafter(ratio, 1.0)
    return ratio


def _network(metadata: dict[str, str], put: Callable[[str, Any, str], None], notes: list[str], name: str) -> None:
    module = metadata.get("ss_network_module")
    if module is None:
        return
    raw_args = metadata.get("ss_network_args") or "{}"
    try:
        arguments = json.loads(raw_args)
    except (json.JSONDecodeError, RecursionError):
        arguments = None
    if not isinstance(arguments, dict):
        arguments = {}
        notes.append(f"The network arguments of {name} ({shown(raw_args)}) cannot be read; they are asked.")
    items = [f"{key}={value}" for key, value in arguments.items()]
    try:
        fields, ignored = network_fields(module, items)
    except ConfigError as exc:
        notes.append(f"The network of {name} cannot be trained here ({shown(exc.message)}); choose the network "
                     "type.")
        return
    for field, value in fields.items():
        put(field, value, "ss_network_args" if field != "network_type" else "ss_network_module")
    for key in ignored:
        notes.append(f"The network argument '{shown(key)}' of {name} is not offered by this wizard; it is left "
                     "out.")
    for key, field, convert, default in (("ss_network_dim", "net_dim", int, "4"),
                                         ("ss_network_alpha", "alpha", float, "1")):
        try:
            put(field, convert(metadata.get(key, default)), key)
        except ValueError:  # "Dynamic" after a dynamic resize, or anything else: asked
            notes.append(f"'{key}' in {name} is '{shown(metadata[key])}', which is not understood; it is asked.")


def _optimizer(metadata: dict[str, str], put: Callable[[str, Any, str], None], notes: list[str]) -> None:
    """ss_optimizer "torch.optim.adamw.AdamW(weight_decay=0.1,betas=(0.9, 0.99))" -> AdamW and its arguments."""
    text = metadata.get("ss_optimizer")
    if not text:
        return
    class_path, _, arguments = text.partition("(")
    class_name = class_path.strip().rsplit(".", 1)[-1].lower()
    by_name = {name.lower(): name for name in OPTIMIZERS}
    optimizer = OPTIMIZER_OF_CLASS.get(class_name) or by_name.get(class_name)
    if optimizer is None:
        notes.append(f"The optimizer {shown(class_path.strip())} of the LoRA is not offered here; choose one.")
        return
    put("optimizer_type", optimizer, "ss_optimizer")
    put("optimizer_args", optimizer_arguments(arguments[:-1] if arguments.endswith(")") else arguments),
        "ss_optimizer")


def optimizer_arguments(text: str) -> dict[str, str]:
    """"weight_decay=0.1,betas=(0.9, 0.99)" -> {"weight_decay": "0.1", "betas": "0.9,0.99"}: split at the commas
    outside brackets; a tuple becomes the comma list that optimizer_args uses."""
    pieces, depth, current = [], 0, ""
    for character in text:
        depth += character in "([{"
        depth -= character in ")]}"
        if character == "," and depth == 0:
            pieces.append(current)
            current = ""
        else:
            current += character
    pieces.append(current)
    arguments = {}
    for piece in pieces:
        key, equals, value = piece.partition("=")
        if equals and key.strip():
            value = value.strip()
            if value.startswith("(") and value.endswith(")"):
                value = value[1:-1]
            arguments[key.strip()] = value.replace(" ", "")
    return arguments


def _folders(metadata: dict[str, str], put: Callable[[str, Any, str], None], notes: list[str], lora: Path) -> None:
    """The parent of the image folders (and of the regularization folders) when it is found near the LoRA."""
    for key, field in (("ss_dataset_dirs", "img_folder"), ("ss_reg_dataset_dirs", "reg_img_folder")):
        try:
            names = [name for name in json.loads(metadata.get(key) or "{}") if not re.search(r" \(\d+\)$", name)]
        except (json.JSONDecodeError, RecursionError, TypeError):
            continue
        if not all(isinstance(name, str) and Path(name).name == name and name not in (".", "..") for name in names):
            continue  # folder names only; a path in a LoRA's metadata is not looked for
        if not names:
            continue
        parent = find_parent_folder(names, lora)
        if parent is None:
            notes.append(f"The folders {shown(', '.join(names))} it was trained on are not beside the LoRA; choose "
                         "them again.")
        else:
            put(field, str(parent), key)


def find_parent_folder(names: list[str], lora: Path) -> Path | None:
    """A folder that holds every folder of `names`: the LoRA's folder, one up to FOLDER_SEARCH_LEVELS above it, or
    a subfolder of one of those (project/img/10_name beside project/model/name.safetensors)."""
    places = [lora.resolve().parent, *lora.resolve().parent.parents][:FOLDER_SEARCH_LEVELS + 1]
    for place in places:
        try:
            candidates = [place] + sorted(child for child in place.iterdir() if child.is_dir())
        except OSError:  # a folder we may not list
            continue
        for candidate in candidates:
            if all((candidate / name).is_dir() for name in names):
                return candidate
    return None
