"""No setting is "saved but ignored": every field of the config declaration reaches the trainer or a wizard mechanism.

A field reaches the trainer when setting it to another value changes the trainer's settings (TrainArgs), and each
TrainArgs field it changes is read by trainer code other than the metadata writer (a value only copied into the
LoRA's `ss_*` metadata does nothing; that is how `lowram` was ignored). The reads are found in the trainer's source
with Python's own parser, so a setting read only on a rare path (samples, resume, a network type) counts too.
Fields that steer the wizard itself are listed with the wizard function that reads them.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import wizard.app
import wizard.formats.seed_json
import wizard.formats.settings_file
import wizard.graph
import wizard.runner
from sd_scripts.args import TrainArgs
from wizard.config import FIELDS, TrainConfig
from wizard.network_options import unused_fields
from wizard.translate import train_args_values

TRAINER_SOURCES = Path(__file__).resolve().parent.parent / "sd_scripts"
# Modules that only declare or record the settings: a read there is not a use...
NOT_A_USE = {"args.py", "metadata.py"}
# ...except for the settings whose purpose is the metadata itself.
METADATA_SETTINGS = {"training_comment", "no_metadata"}

# Fields that steer the wizard, not the trainer, with the wizard function that acts on each.
WIZARD_ONLY = {
    "tag_occurrence_txt_file": wizard.runner,
    "sort_tag_occurrence_alphabetically": wizard.runner,
    "tag_occurrence_weighted_by_repeats": wizard.runner,
    "save_json_folder": wizard.app,
    "save_json_name": wizard.formats.settings_file,
    "settings_format": wizard.formats.settings_file,
    "save_json_only": wizard.app,
    "load_json_path": wizard.app,
    "multi_run_folder": wizard.app,
    "json_load_skip_list": wizard.formats.seed_json,
}

# Settings that act only together with another answer: the other answer the check sets first.
CONTEXT = {
    "cosine_restarts": {"scheduler": "cosine_with_restarts"},
    "scheduler_power": {"scheduler": "polynomial"},
    "sample_every_n_steps": {"sample_prompts": "/p/prompts.txt"},
    "sample_every_n_epochs": {"sample_prompts": "/p/prompts.txt"},
    "sample_sampler": {"sample_prompts": "/p/prompts.txt"},
    "save_last_n_epochs": {"save_every_n_epochs": 1},
    "multires_noise_discount": {"multires_noise_iterations": 6},
    "max_steps": {},
    "caption_dropout_every_n_epochs": {},
}

# Text settings with a format of their own: a valid example of each.
EXAMPLES = {
    "down_lr_weight": "sine",
    "up_lr_weight": "cosine",
    "block_dims": ",".join(["4"] * 25),
    "block_alphas": ",".join(["2"] * 25),
    "conv_block_dims": ",".join(["4"] * 25),
    "conv_block_alphas": ",".join(["2"] * 25),
}


def another_value(field, current):
    """A valid value of `field` other than `current`, derived from its declaration."""
    if field.name in EXAMPLES:
        return EXAMPLES[field.name]
    if field.choices is not None:
        return next(choice for choice in field.choices if choice != current)
    if field.type is bool:
        return not current
    if field.path is not None:
        return "/elsewhere/" + field.name + ("." + field.extensions[0] if field.extensions else "")
    if field.type in (int, float):
        if current is None and field.maximum is not None:
            return field.type((field.maximum + (field.minimum or 0)) / 2)
        if current is None:
            return field.type(field.minimum if field.minimum is not None and field.minimum > 0 else 1)
        candidate = current + 1 if field.maximum is None or current + 1 <= field.maximum else current - 1
        if field.minimum is not None and candidate < field.minimum:
            candidate = field.minimum
        return field.type(candidate) if candidate != current else field.type(current / 2)
    if field.type is dict:
        return {"weight_decay": "0.05"}
    if field.type is list:
        return ["1girl"]
    return "something else"


def network_context(name: str) -> dict:
    """A network type that takes the network setting `name` (LoRA takes the plain ones)."""
    from wizard.config import NETWORK_TYPES

    for network_type in NETWORK_TYPES:
        config = TrainConfig(cuda=True)
        config.set("network_type", network_type)
        if name not in unused_fields(config):
            return {"network_type": network_type}
    raise AssertionError(f"no network type takes {name}")


def trainer_reads() -> dict[str, list[str]]:
    """TrainArgs field name -> the trainer files that read an attribute of that name (declarations excluded)."""
    names = set(TrainArgs.field_names())
    reads: dict[str, list[str]] = {name: [] for name in names}
    for path in TRAINER_SOURCES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and node.attr in names):
                continue
            if path.name not in NOT_A_USE or (path.name == "metadata.py" and node.attr in METADATA_SETTINGS):
                reads[node.attr].append(str(path.relative_to(TRAINER_SOURCES)))
    return reads


TRAINER_FIELDS = [field for field in FIELDS if field.name not in WIZARD_ONLY]


@pytest.fixture(scope="module")
def reads():
    return trainer_reads()


@pytest.mark.parametrize("field", TRAINER_FIELDS, ids=lambda field: field.name)
def test_each_trainer_setting_changes_what_the_trainer_reads(field, reads):
    context = dict(CONTEXT.get(field.name, {}))
    if field.group == "network" and field.name != "network_type":
        context.update(network_context(field.name))
    before = TrainConfig(cuda=True)
    for name, value in context.items():
        before.set(name, value)
    after = before.copy()
    after.set(field.name, another_value(field, before.get(field.name)))
    old, new = train_args_values(before), train_args_values(after)
    changed = [name for name in old if old[name] != new[name]]
    assert changed, f"{field.name} changes no trainer setting: it would be saved but ignored"
    assert any(reads[name] for name in changed), (
        f"{field.name} reaches TrainArgs.{changed}, which no trainer code reads (metadata aside)")


@pytest.mark.parametrize("name, module", sorted(WIZARD_ONLY.items()), ids=lambda item: str(item))
def test_each_wizard_only_setting_is_read_by_its_wizard_code(name, module):
    assert f'"{name}"' in inspect.getsource(module), f"{module.__name__} does not read {name}"
    assert name in TrainConfig(cuda=True).to_dict()


def test_the_tables_name_only_declared_fields():
    declared = {field.name for field in FIELDS}
    assert set(WIZARD_ONLY) <= declared and set(CONTEXT) <= declared
