"""sd-scripts `--config_file` TOML: import into the wizard and export from it, in kohya names.

Import reads the file as the trainer does (`TrainArgs.from_toml`, [section] tables flattened) and translates with
`wizard.translate`. A setting the wizard cannot hold (an sd-scripts option it has no field for, a network argument
it does not know) is found by translating back and comparing: each key of the file whose value does not survive
becomes a warning, so nothing is dropped silently.

A bucket size the file leaves out is sd-scripts' default where that fits the resolution, else it follows the
resolution as the wizard's own default does (sd-scripts would stop there).

Export writes every TrainArgs field the wizard sets, flat, as sd-scripts' own `--output_config` does; TOML has no
null, so unset values are left out (the trainer reads them back as unset). The file also runs directly:
`python -m sd_scripts.train --config_file x.toml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from sd_scripts.args import TrainArgs, flatten_sections, read_toml
from wizard.config import TrainConfig
from wizard.formats.files import write_text_atomically
from wizard.translate import from_train_args, to_train_args


def load(path: str | Path, cuda: bool | None = None) -> tuple[TrainConfig, list[str]]:
    """The wizard's config for an sd-scripts TOML; returns it and warnings naming what could not be kept."""
    path = Path(path)
    args, unknown = TrainArgs.from_toml(path)
    present = flatten_sections(read_toml(path))
    config = from_train_args(args, cuda=cuda)
    _adapt_missing_bucket_sizes(config, args, present)

    warnings = [f"'{key}' in {path.name} is not an sd-scripts setting this trainer knows; it was ignored."
                for key in unknown]
    kept = to_train_args(config)
    for key in present:
        if key in unknown or key == "network_args":
            continue
        wanted, got = getattr(args, key), getattr(kept, key)
        if wanted != got:
            warnings.append(f"'{key}' = {wanted!r} in {path.name} cannot be expressed in the wizard; it will be "
                            f"{got!r}.")
    lost = lost_network_args(args.network_args, kept.network_args)
    if lost:
        warnings.append(f"The network arguments {', '.join(lost)} in {path.name} cannot be expressed in the wizard; "
                        "they were ignored.")
    return config, warnings


# sd-scripts' bucket size keys and the wizard fields that hold them.
BUCKET_SIZE_FIELDS = {"min_bucket_reso": "min_bucket_resolution", "max_bucket_reso": "max_bucket_resolution"}


def _adapt_missing_bucket_sizes(config: TrainConfig, args: TrainArgs, present: dict[str, Any]) -> None:
    """A bucket size the file leaves out is sd-scripts' default (256 / 1024) where that fits the resolution, as
    sd-scripts trains it; where it does not (sd-scripts would stop), it follows the resolution like every default."""
    width, height = config.get("train_resolution"), config.get("height_resolution") or config.get("train_resolution")
    fits = min(width, height) >= args.min_bucket_reso and max(width, height) <= args.max_bucket_reso
    if not args.enable_bucket or fits:
        return
    for key, field in BUCKET_SIZE_FIELDS.items():
        if key not in present:
            config.reset(field)


def lost_network_args(wanted: list[str], kept: list[str]) -> list[str]:
    """Entries of `wanted` missing from `kept`; the defaults the translation spells out (conv_alpha=1) are not loss."""
    kept_values = {key.strip(): value.strip() for key, _, value in (item.partition("=") for item in kept)}
    lost = []
    for item in wanted:
        key, _, value = item.partition("=")
        if not _same_text_or_number(kept_values.get(key.strip()), value.strip()):
            lost.append(item)
    return lost


def _same_text_or_number(kept: str | None, wanted: str) -> bool:
    if kept is None:
        return False
    try:
        return float(kept) == float(wanted)
    except ValueError:
        return kept.lower() == wanted.lower()


def save(config: TrainConfig, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the config as an sd-scripts TOML; an existing file is replaced only with overwrite=True."""
    values: dict[str, Any] = {key: value for key, value in to_train_args(config).to_mapping().items()
                              if value is not None}
    return write_text_atomically(Path(path), tomli_w.dumps(values), overwrite=overwrite)
