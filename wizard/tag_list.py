"""The tag list the original tool wrote beside a LoRA: every caption tag with how often it is used.

Same layout as the original (a header line, then `[count] tag` lines, by count or alphabetically), but the tags are
stripped of spaces and line ends, the captions are read as UTF-8 (by the trainer's own dataset scan, so the list shows
exactly what will be trained, class-token captions included), and counts can be weighted by the folders' repeats.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sd_scripts.dataset import DatasetPlan
from wizard.formats.files import write_text_atomically


def count_tags(plan: DatasetPlan, *, weighted_by_repeats: bool = False) -> dict[str, Counter[str]]:
    """Tag counts per training folder, in folder order; regularization folders and folders without images are
    left out, as they add nothing the LoRA learns."""
    counts: dict[str, Counter[str]] = {}
    for subset in plan.subsets:
        if subset.is_reg or not subset.images:
            continue
        folder = counts.setdefault(subset.image_dir.name, Counter())
        weight = subset.num_repeats if weighted_by_repeats else 1
        for image in subset.images:
            for tag in image.caption.split(","):
                tag = tag.strip()
                if tag:
                    folder[tag] += weight
    return counts


def tag_list_text(counts: dict[str, Counter[str]], *, lora_name: str, alphabetical: bool, weighted: bool) -> str:
    """The whole file: all folders together, then each folder on its own when there are several."""
    total: Counter[str] = Counter()
    for folder in counts.values():
        total.update(folder)
    unit = " (counts weighted by the folders' repeats)" if weighted else ""
    lines = [f"Below is a list of keywords used during the training of {lora_name}{unit}:"]
    lines += _ranked(total, alphabetical)
    if len(counts) > 1:
        for name, folder in counts.items():
            lines += ["", f"In {name}:"] + _ranked(folder, alphabetical)
    return "\n".join(lines) + "\n"


def write_tag_list(plan: DatasetPlan, path: Path, *, lora_name: str, alphabetical: bool = False,
                   weighted_by_repeats: bool = False) -> Path:
    """Write the list atomically; a file already there gets a new name instead of being overwritten."""
    counts = count_tags(plan, weighted_by_repeats=weighted_by_repeats)
    text = tag_list_text(counts, lora_name=lora_name, alphabetical=alphabetical, weighted=weighted_by_repeats)
    return write_text_atomically(_free_name(path), text)


def _ranked(counts: Counter[str], alphabetical: bool) -> list[str]:
    if alphabetical:
        ordered = sorted(counts.items(), key=lambda item: item[0])
    else:  # most used first; ties in the order the tags were first seen
        ordered = sorted(counts.items(), key=lambda item: -item[1])
    return [f"[{count}] {tag}" for tag, count in ordered]


def _free_name(path: Path) -> Path:
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate
