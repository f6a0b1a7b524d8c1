"""Every settings file a user may have, read by what it holds (not by its extension), and saving in either format.

`--load-json`, the starter question "load saved settings?", `--from-lora` and the queue all go through `load`:
- a JSON object: the wizard's own file or the seed tool's (`seed_json`), or a Kohya_ss GUI file (`kohya_gui`, which
  `seed_json` recognises by its keys);
- an sd-scripts `--config_file` TOML (`sd_toml`);
- a LoRA .safetensors whose `ss_*` metadata holds the settings it was trained with (`lora_metadata`).
`save` writes the wizard's JSON or an sd-scripts TOML, as the user chose (`settings_format`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from sd_scripts.errors import UserFacingError
from wizard.config import FIELDS, TrainConfig
from wizard.formats import lora_metadata, sd_toml, seed_json
from wizard.formats.seed_json import FLOW_FIELDS, new_settings_path

Kind = Literal["json", "toml", "lora"]
# What a settings file can be, for the file questions and the queue.
EXTENSIONS = ("json", "toml", "safetensors")
HEAD_BYTES = 64


def detect(path: str | Path) -> Kind:
    """Which kind of settings file `path` is, from its content; one sentence when it is none of them."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as stream:
            head = stream.read(HEAD_BYTES)
    except FileNotFoundError:
        raise UserFacingError(f"The settings file {path} does not exist; check the path and try again.") from None
    if lora_metadata.looks_like_safetensors(head, size):
        return "lora"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserFacingError(f"{path.name} is not a text file or a LoRA; choose a settings .json or .toml file, or "
                              "a LoRA .safetensors.") from None
    if text.lstrip().startswith("{"):
        return "json"  # TOML never starts with a brace ([sections] do start with a bracket); a broken JSON is
        # reported by the JSON reader
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        if path.suffix.lower() == ".toml":
            return "toml"  # the TOML reader names the broken line
        raise UserFacingError(f"{path.name} is neither a settings JSON (the wizard's or the Kohya_ss GUI's), an "
                              "sd-scripts TOML nor a LoRA; choose one of those.") from None
    return "toml"


def load(path: str | Path, into: TrainConfig | None = None) -> tuple[TrainConfig, list[str]]:
    """The settings of `path` (any kind) on top of `into` (or the defaults), and the notes for the user.

    As for every format, the fields named in `into`'s json_load_skip_list and the flow fields keep `into`'s values.
    """
    path = Path(path)
    base = into.copy() if into is not None else TrainConfig()
    kind = detect(path)
    if kind == "json":
        return seed_json.load(path, into=base)
    if kind == "toml":
        loaded, notes = sd_toml.load(path, cuda=base.cuda)
        notes = [f"{path.name} is an sd-scripts TOML; settings it does not hold are sd-scripts' defaults."] + notes
    else:
        loaded, notes = lora_metadata.load(path, TrainConfig(cuda=base.cuda))
        notes = [f"The settings {path.name} was trained with were read from its metadata; what it does not hold "
                 "is asked."] + notes
    return merge_loaded(loaded, base), notes


def merge_loaded(loaded: TrainConfig, into: TrainConfig) -> TrainConfig:
    """`into` with every field `loaded` read from a file, except the skipped and the flow fields."""
    skipped = set(into.get("json_load_skip_list") or ()) | set(FLOW_FIELDS)
    for field in FIELDS:
        if loaded.origin(field.name) == "loaded" and field.name not in skipped:
            into.set(field.name, loaded.get(field.name), origin="loaded")
    return into


def save(config: TrainConfig) -> Path:
    """Write the settings into their save_json_folder as the chosen format; a new file, never over another."""
    folder, name = config.get("save_json_folder"), config.get("save_json_name")
    if config.get("settings_format") == "json":
        return seed_json.save(config, folder, name)
    return sd_toml.save(config, new_settings_path(folder, name, ".toml"))

