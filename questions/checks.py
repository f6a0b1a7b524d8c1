"""Validation of answers: each check returns one sentence saying what is wrong and what to do, or None.

The field's type and range are checked by `TrainConfig.set` itself; these checks cover what a declaration cannot
say: that a file exists, that an image folder has the `<repeats>_<name>` layout, that a list has 12 or 25 values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from sd_scripts.networks.kinds import BLOCK_WEIGHT_PRESETS, BlockCounts, block_counts
from wizard.config import TrainConfig, trains_sdxl

Check = Callable[[Any, TrainConfig], str | None]

# kohya's image folder convention: <repeats>_<name>, e.g. 10_mychar
_REPEAT_FOLDER = re.compile(r"^\d+_.+")



def blocks_of(config: TrainConfig) -> BlockCounts:
    """How many values the per-block settings take for the base model: SD 12 down, 1 middle, 12 up (25); SDXL,
    as sd-scripts numbers it, base, 9 input, 3 middle, 9 output and out (23)."""
    return block_counts(trains_sdxl(config))


def blocks_in_words(config: TrainConfig) -> str:
    counts = blocks_of(config)
    if counts.edges:
        return (f"{counts.total} blocks (base, {counts.per_side} input, {counts.middle} middle, {counts.per_side} "
                "output, out)")
    return f"{counts.total} blocks ({counts.per_side} down, middle, {counts.per_side} up)"


def existing_file(what: str, extensions: tuple[str, ...], *, required: bool) -> Check:
    """The answer must be an existing file ending in one of `extensions` (None is fine unless `required`)."""

    def check(answer: Any, config: TrainConfig) -> str | None:
        if answer is None:
            return f"Choose the {what} to go on." if required else None
        path = Path(answer)
        if not path.is_file():
            return f"{answer} is not an existing file; choose the {what} again."
        if path.suffix.lower().lstrip(".") not in extensions:
            return f"The {what} must end in .{' or .'.join(extensions)}; {path.name} does not."
        return None

    return check


def existing_folder(what: str, *, required: bool) -> Check:
    def check(answer: Any, config: TrainConfig) -> str | None:
        if answer is None:
            return f"Choose the {what} to go on." if required else None
        if not Path(answer).is_dir():
            return f"{answer} is not an existing folder; choose the {what} again."
        return None

    return check


def repeat_folders(what: str, *, required: bool) -> Check:
    """The answer must be a folder whose subfolders are named <repeats>_<name> (kohya's layout)."""
    folder_exists = existing_folder(what, required=required)

    def check(answer: Any, config: TrainConfig) -> str | None:
        problem = folder_exists(answer, config)
        if problem is not None or answer is None:
            return problem
        if not any(child.is_dir() and _REPEAT_FOLDER.match(child.name) for child in Path(answer).iterdir()):
            return (f"The {what} {answer} has no subfolder named <repeats>_<name> (e.g. 10_mychar); choose the "
                    f"folder that contains such subfolders, not the one with the images.")
        return None

    return check


def block_weights(answer: Any, config: TrainConfig) -> str | None:
    """12 multipliers (SDXL 9) from 0 to 1, or one preset word."""
    if answer is None or answer in BLOCK_WEIGHT_PRESETS:
        return None
    values = _numbers(answer)
    count = blocks_of(config).per_side
    if values is None or len(values) != count or not all(0 <= value <= 1 for value in values):
        return (f"Type {count} numbers from 0 to 1 separated by commas, or one of: "
                f"{', '.join(BLOCK_WEIGHT_PRESETS)}.")
    return None


def block_values(*, whole: bool) -> Check:
    """One value per U-Net block (25, SDXL 23): whole numbers of at least 1 (dims), or numbers of at least 0."""

    def check(answer: Any, config: TrainConfig) -> str | None:
        if answer is None:
            return None
        values = _numbers(answer)
        fits = values is not None and len(values) == blocks_of(config).total and all(
            (value >= 1 and value == int(value)) if whole else value >= 0 for value in values)
        if not fits:
            kind = "whole numbers of at least 1" if whole else "numbers of at least 0"
            return f"Type {kind} separated by commas, one for each of the {blocks_in_words(config)}."
        return None

    return check


def divides_dim(answer: Any, config: TrainConfig) -> str | None:
    """DyLoRA trains ranks in steps of `unit`, so the dim must be a multiple of it."""
    if isinstance(answer, int) and answer >= 1 and config.get("net_dim") % answer != 0:
        return f"The unit must divide the dim ({config.get('net_dim')}); choose for example 1, 2 or 4."
    return None


def _numbers(text: str) -> list[float] | None:
    try:
        return [float(item) for item in text.replace(" ", ",").split(",") if item]
    except ValueError:
        return None
