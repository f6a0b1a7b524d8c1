"""Property tests over the config declaration (hypothesis): whatever the declaration allows, the wizard either accepts
or refuses with a sentence that names a setting; settings files give back what they were given; no folder tree makes
the dataset scan crash.

The strategies are built from `wizard.config.FIELDS` alone (type, choices, range, nullability, path kind), so a new
field is covered the day it is declared.
"""

from __future__ import annotations

import dataclasses
import re
import string
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sd_scripts.args import TrainArgs
from sd_scripts.dataset import DatasetSettings, scan_dataset
from sd_scripts.errors import UserFacingError
from sd_scripts.training.validation import validate_args
from wizard.config import FIELD_BY_NAME, FIELDS, ConfigError, Field, TrainConfig
from wizard.formats import sd_toml, seed_json
from wizard.formats.seed_json import FLOW_FIELDS
from wizard.translate import to_train_args

PROPERTY_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                             derandomize=True)  # the same examples on every run: CI never flickers
REQUIRED_PATHS = ("base_model", "img_folder", "output_folder")
WORDS = st.text(alphabet=string.ascii_letters + string.digits + " _-,.", max_size=12)
# Paths the path fields may point at: they exist, so what is checked is the settings, not the disk.
PATHS = Path(tempfile.mkdtemp(prefix="wizard-properties-"))
(PATHS / "10_images").mkdir()
(PATHS / "model.safetensors").write_bytes(b"{}")


def field_names(message: str) -> bool:
    """Whether `message` names a setting: its key, its label or the trainer's name for it."""
    text = message.lower()
    names = {field.name for field in FIELDS} | {field.label.lower() for field in FIELDS}
    names |= {field.name for field in dataclasses.fields(TrainArgs)}
    names |= {name.replace("_", " ") for name in names}
    return any(re.search(rf"\b{re.escape(name)}\b", text) for name in names)


def values_of(field: Field) -> st.SearchStrategy[Any]:
    """Every value the declaration of `field` allows (None where it is nullable)."""
    if field.choices is not None:
        allowed = st.sampled_from(field.choices)
    elif field.path == "folder":
        allowed = st.just(str(PATHS))
    elif field.path == "file":
        allowed = st.just(str(_existing_file(field.extensions[0] if field.extensions else "safetensors")))
    elif field.type is bool:
        allowed = st.booleans()
    elif field.type is int:
        allowed = st.integers(min_value=int(field.minimum) if field.minimum is not None else -10,
                              max_value=int(field.maximum) if field.maximum is not None else 100_000)
    elif field.type is float:
        allowed = st.floats(min_value=field.minimum if field.minimum is not None else -10.0,
                            max_value=field.maximum if field.maximum is not None else 10.0,
                            allow_nan=False, allow_infinity=False)
    elif field.type is list:
        allowed = st.lists(WORDS, max_size=3)
    elif field.type is dict:
        allowed = st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True), WORDS, max_size=2)
    else:
        allowed = WORDS
    return st.one_of(st.none(), allowed) if field.nullable else allowed


def _existing_file(suffix: str) -> Path:
    target = PATHS / f"file.{suffix}"
    if not target.exists():
        target.write_bytes(b"{}")
    return target


@st.composite
def configs(draw: st.DrawFn) -> TrainConfig:
    """A config whose every field holds a value its declaration allows; a combination the config itself refuses
    must say which setting is wrong."""
    config = TrainConfig(cuda=draw(st.booleans()))
    for name in REQUIRED_PATHS:  # the questions never let these be empty: the checks behind them are what is tested
        config.set(name, draw(values_of(FIELD_BY_NAME[name]).filter(lambda value: value is not None)))
    for field in FIELDS:
        if field.name in REQUIRED_PATHS:
            continue
        if draw(st.booleans()):  # about half the fields are answered, the others keep their (adapted) defaults
            continue
        value = draw(values_of(field))
        try:
            config.set(field.name, value, origin="loaded")
        except ConfigError as refused:
            assert field_names(refused.message), refused.message
    return config


@PROPERTY_SETTINGS
@given(configs())
def test_every_allowed_config_trains_or_is_refused_naming_a_setting(config: TrainConfig):
    try:
        validate_args(to_train_args(config))
    except UserFacingError as refused:
        assert field_names(str(refused)), str(refused)


@PROPERTY_SETTINGS
@given(configs())
def test_the_wizard_json_gives_back_every_setting(config: TrainConfig):
    with tempfile.TemporaryDirectory() as folder:
        saved = seed_json.save(config, folder, "round trip")
        loaded, _ = seed_json.load(saved, into=TrainConfig(cuda=config.cuda))
    for field in FIELDS:
        if field.name not in FLOW_FIELDS:
            assert loaded.get(field.name) == config.get(field.name), field.name


@PROPERTY_SETTINGS
@given(configs())
def test_an_sd_scripts_toml_gives_back_what_the_trainer_would_use(config: TrainConfig):
    # sd-scripts' TOML names no family: the trainer reads it from the model file. Settings that say SDXL without a
    # model file that says so cannot carry it (here the path fields point at a placeholder, not a model).
    assume(not config.get("sdxl"))
    try:
        wanted = to_train_args(config)
    except UserFacingError:
        return  # refused before any file is written (the test above checks the sentence)
    with tempfile.TemporaryDirectory() as folder:
        path = sd_toml.save(config, Path(folder) / "run.toml")
        loaded, _ = sd_toml.load(path, cuda=config.cuda)
    assert to_train_args(loaded) == wanted


NAMES = st.sampled_from(["10_cat", "3_dog person", "0_x", "cat", "1_", "ü_ñame", "2_a b", ".hidden", "5_x.png"])
FILES = st.sampled_from(["a.png", "a.txt", "b.jpg", "b.caption", "c.webp", "empty.png", "notes.md", ".DS_Store",
                         "d.PNG", "e.txt"])


@st.composite
def folder_trees(draw: st.DrawFn) -> dict[str, Any]:
    """Nested folders of images, captions and other files, some empty, some broken."""
    def tree(depth: int) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for name in draw(st.lists(FILES, max_size=4, unique=True)):
            entries[name] = draw(st.sampled_from([b"", b"\x89PNG broken", "a cat, sitting".encode(),
                                                  "caf\xe9".encode("cp1252"), _tiny_png()]))
        if depth < 2:
            for name in draw(st.lists(NAMES, max_size=3, unique=True)):
                entries[name] = tree(depth + 1)
        return entries
    return tree(0)


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    stream = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(stream, format="PNG")
    return stream.getvalue()


def _write(root: Path, entries: dict[str, Any]) -> None:
    for name, content in entries.items():
        if isinstance(content, dict):
            (root / name).mkdir()
            _write(root / name, content)
        else:
            (root / name).write_bytes(content)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(folder_trees())
def test_no_folder_tree_makes_the_scan_crash(entries: dict[str, Any]):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "images"
        root.mkdir()
        _write(root, entries)
        try:
            plan = scan_dataset(DatasetSettings(train_data_dir=str(root), resolution=(64, 64)))
        except UserFacingError as refused:
            assert str(refused).endswith((".", ")")), str(refused)
        else:
            assert plan.num_train_images >= 0
