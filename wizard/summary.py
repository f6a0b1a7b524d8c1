"""The summary shown before training: every value that will be used, where it came from.

One row per TrainConfig field, in the declaration order of `wizard.config.FIELDS` (which keeps the groups together),
labelled with the field's own label, so nothing the trainer will use is hidden: asked, loaded or default. Network
settings the chosen network type does not take read "(not used by <type>)"; the data-loader settings say when the
trainer will load batches without worker processes.
"""

from __future__ import annotations

from typing import Any

from sd_scripts.dataset.loader import loading_workers
from wizard.askers.base import SummaryRow
from wizard.config import FIELD_BY_NAME, FIELDS, TrainConfig
from wizard.network_options import unused_fields
from wizard.suggestions import suggestions_for

NOT_SET = "(not set)"


def format_value(value: Any) -> str:
    """A value as a person reads it: yes/no, 1e-4 rather than 0.0001, name=value pairs, "(not set)" for None."""
    if value is None:
        return NOT_SET
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return " ".join(f"{key}={item}" for key, item in value.items()) or NOT_SET
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or NOT_SET
    return str(value)


def summary_rows(config: TrainConfig) -> list[SummaryRow]:
    """One row per field; a network setting the chosen network type does not take says so instead of a value.

    A default adapted to the other answers says from what and why; a loaded value the popups would have chosen
    otherwise carries their suggestion (the loaded value is kept)."""
    unused = unused_fields(config)
    not_used = f"(not used by {config.get('network_type')})"
    return [SummaryRow(field.name, field.label,
                       not_used if field.name in unused else _value_with_notes(config, field.name),
                       config.origin(field.name), TOPICS[field.group], _changed(config, field.name),
                       None if field.name in unused else field.path)
            for field in FIELDS]


def _value_with_notes(config: TrainConfig, name: str) -> str:
    text = format_value(config.get(name))
    idle = _idle_loader_fields(config).get(name)
    if idle:
        text += f" ({idle})"
    adjusted = config.adjusted_default(name)
    if adjusted is not None:
        text += f" (default {format_value(FIELD_BY_NAME[name].default_for(config.cuda))} adjusted: {adjusted})"
    for suggestion in suggestions_for(config, name):
        text += f" (kept from the file; {suggestion})"
    return text


# The summary's topics, in the order of the declaration's groups.
TOPICS = {"paths": "Files and folders", "model": "Base model", "network": "Network", "optimizer": "Optimizer",
          "schedule": "Learning rate schedule", "length": "Training length", "dataset": "Images and buckets",
          "captions": "Captions", "precision": "Precision and quality", "saving": "Saving",
          "sampling": "Sample images", "json": "Settings file"}


def by_topic(rows: list[SummaryRow]) -> list[tuple[str, list[SummaryRow]]]:
    """The rows under their topics, topics in declaration order, and in each topic the changed settings first:
    what the user chose is read first, the defaults after it."""
    topics: dict[str, list[SummaryRow]] = {}
    for row in rows:
        topics.setdefault(row.topic, []).append(row)
    return [(topic, sorted(members, key=lambda row: not row.changed)) for topic, members in topics.items()]


def _changed(config: TrainConfig, name: str) -> bool:
    """Answered or loaded, and not what the wizard would have used anyway."""
    return config.origin(name) != "default" and config.get(name) != FIELD_BY_NAME[name].default_for(config.cuda)


def _idle_loader_fields(config: TrainConfig) -> dict[str, str]:
    """The data-loader settings the trainer will not use with these answers, and why (the trainer's own rule)."""
    in_memory = bool(config.get("cache_latents")) and not config.get("cache_latents_to_disk")
    if loading_workers(config.get("num_workers"), latents_in_memory=in_memory):
        return {}
    if in_memory:
        reason = "not used: latents are cached in memory, batches are loaded without workers"
        return {"num_workers": reason, "persistent_workers": reason}
    return {"persistent_workers": "not used with 0 workers"}
