"""sd-scripts' `--dataset_config` file (TOML, or JSON): several datasets, each with several image folders.

Three levels, `[general]`, `[[datasets]]` and `[[datasets.subsets]]`; a value is looked up in the subset, then its
dataset, then `[general]`, then the trainer's own settings, as sd-scripts' `BlueprintGenerator` does. Only
DreamBooth-style subsets (`image_dir` with caption files) are supported. Relative `image_dir` paths are read from
the config file's folder, so a config and its images can be moved together.
"""

from __future__ import annotations

import json
import tomllib
import typing
from pathlib import Path
from typing import Any

from sd_scripts.dataset.settings import DatasetParams, DatasetSettings, SubsetOptions, parse_resolution
from sd_scripts.dataset.subsets import Subset
from sd_scripts.errors import UserFacingError

DATASET_KEY_TYPES: dict[str, type] = {
    "resolution": object,  # an int or [width, height], parsed by parse_resolution
    "batch_size": int,
    "enable_bucket": bool,
    "min_bucket_reso": int,
    "max_bucket_reso": int,
    "bucket_reso_steps": int,
    "bucket_no_upscale": bool,
    "prior_loss_weight": float,
}
SUBSET_OPTION_TYPES: dict[str, type] = typing.get_type_hints(SubsetOptions)
SUBSET_ONLY_TYPES: dict[str, type] = {"image_dir": str, "num_repeats": int, "class_tokens": str, "is_reg": bool}
KEY_TYPES = DATASET_KEY_TYPES | SUBSET_OPTION_TYPES | SUBSET_ONLY_TYPES
TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text in quotes"}

# The trainer's names for the values a dataset_config names differently.
SETTINGS_NAMES = {"batch_size": "train_batch_size"}

Level = dict[str, Any]


def read_dataset_config(path: str | Path, settings: DatasetSettings) -> list[tuple[DatasetParams, list[Subset]]]:
    """The datasets of a dataset_config file, each as its shared parameters and its (not yet read) subsets."""
    path = Path(path)
    data = _load(path)
    _check_keys(data, {"general", "datasets"}, str(path))
    general = data.get("general", {})
    _check_keys(general, set(DATASET_KEY_TYPES) | set(SUBSET_OPTION_TYPES), f"[general] of {path}")
    datasets = data.get("datasets", [])
    if not isinstance(datasets, list) or not datasets:
        raise UserFacingError(f"The dataset config {path} lists no [[datasets]]; add at least one with its subsets.")
    result = []
    for number, dataset in enumerate(datasets, start=1):
        where = f"dataset {number} of {path}"
        _check_keys(dataset, set(DATASET_KEY_TYPES) | set(SUBSET_OPTION_TYPES) | {"subsets"}, where)
        subsets = dataset.get("subsets", [])
        if not isinstance(subsets, list) or not subsets:
            raise UserFacingError(f"The {where} has no [[datasets.subsets]]; add one with an image_dir.")
        params = _dataset_params([dataset, general], settings, where)
        result.append(
            (
                params,
                [
                    _subset(subset, [dataset, general], settings, path.parent, f"subset {index} of {where}")
                    for index, subset in enumerate(subsets, start=1)
                ],
            )
        )
    return result


def _dataset_params(levels: list[Level], settings: DatasetSettings, where: str) -> DatasetParams:
    resolution = _lookup("resolution", levels, settings, where)
    if resolution is None:
        raise UserFacingError(f"No resolution is set for {where}; add resolution = 512 (or [width, height]).")
    return DatasetParams(
        resolution=parse_resolution(resolution),
        batch_size=_lookup("batch_size", levels, settings, where),
        enable_bucket=_lookup("enable_bucket", levels, settings, where),
        min_bucket_reso=_lookup("min_bucket_reso", levels, settings, where),
        max_bucket_reso=_lookup("max_bucket_reso", levels, settings, where),
        bucket_reso_steps=_lookup("bucket_reso_steps", levels, settings, where),
        bucket_no_upscale=_lookup("bucket_no_upscale", levels, settings, where),
        prior_loss_weight=_lookup("prior_loss_weight", levels, settings, where),
    )


def _subset(table: Level, parents: list[Level], settings: DatasetSettings, base: Path, where: str) -> Subset:
    _check_keys(table, set(SUBSET_OPTION_TYPES) | set(SUBSET_ONLY_TYPES), where)
    if "image_dir" not in table:
        raise UserFacingError(f"The {where} has no image_dir; add image_dir = \"path/to/images\".")
    image_dir = Path(_checked("image_dir", table["image_dir"], where))
    if not image_dir.is_absolute():
        image_dir = base / image_dir
    if not image_dir.is_dir():
        raise UserFacingError(f"The image_dir {image_dir} of {where} is not a folder; correct the path.")
    levels = [table, *parents]
    options = SubsetOptions(**{key: _lookup(key, levels, settings, where) for key in SUBSET_OPTION_TYPES})
    return Subset(
        image_dir=image_dir,
        num_repeats=_checked("num_repeats", table.get("num_repeats", 1), where),
        class_tokens=_checked("class_tokens", table["class_tokens"], where) if "class_tokens" in table else None,
        is_reg=_checked("is_reg", table.get("is_reg", False), where),
        options=options,
    )


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserFacingError(f"The dataset config {path} does not exist; choose the file again.")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserFacingError(
            f"The dataset config {path} cannot be read ({exc}); fix it and save it as UTF-8."
        ) from None
    if not isinstance(data, dict):
        raise UserFacingError(f"The dataset config {path} must hold [general] and [[datasets]] tables.")
    return data


def _check_keys(table: Any, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise UserFacingError(f"In {where}, a table was expected; check the brackets.")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserFacingError(
            f"In {where}, {', '.join(unknown)} is not supported; remove it (allowed: {', '.join(sorted(allowed))})."
        )


def _lookup(key: str, levels: list[Level], settings: DatasetSettings, where: str) -> Any:
    for level in levels:
        if key in level:
            return _checked(key, level[key], where)
    return getattr(settings, SETTINGS_NAMES.get(key, key))


def _checked(key: str, value: Any, where: str) -> Any:
    """The value when it has the key's type (an int is accepted as a float); else a one-sentence error."""
    expected = KEY_TYPES[key]
    if expected is object:
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise UserFacingError(
        f"In {where}, '{key}' is {value!r}, but it must be {TYPE_NAMES[expected]}; correct it and try again."
    )
