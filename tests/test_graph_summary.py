"""The summary after the questions: every setting with its origin, Edit, Save JSON, Start and Cancel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import questions
from test_graph_fixtures import Project, make_project
from wizard.askers.scripted import ScriptedAsker
from wizard.config import FIELDS, TrainConfig
from wizard.formats import seed_json
from wizard.graph import review, walk
from wizard.question import CANCEL
from wizard.summary import format_value, summary_rows

TRAIN = questions.FLOWS["train"]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


def save_into_folder(config: TrainConfig) -> Path:
    return seed_json.save(config, config.get("save_json_folder"), config.get("save_json_name"))


def test_the_summary_lists_every_field_with_its_origin(project: Project):
    loaded = project.json_folder / "loaded.json"
    loaded.write_text(json.dumps({"config_version": 1, "net_dim": 8}), encoding="utf-8")
    config, _ = seed_json.load(loaded, into=TrainConfig(cuda=False))
    walk(TRAIN, config, ScriptedAsker({**project.path_answers(), "use_noise_offset": True, "noise_offset": ZERO}))
    rows = {row.field: row for row in summary_rows(config)}
    assert list(rows) == [field.name for field in FIELDS]
    assert rows["net_dim"].origin == "loaded" and rows["net_dim"].value == "8"
    assert rows["base_model"].origin == "asked" and rows["base_model"].value == str(project.base_model)
    assert rows["test_seed"].origin == "default" and rows["test_seed"].value == "23"
    assert rows["noise_offset"].value == "0" and rows["noise_offset"].origin == "asked"
    assert rows["reg_img_folder"].value == "(not set)"
    assert rows["base_model"].label == "Base model"


ZERO = 0.0  # an answer of 0 (not Cancel): the summary must show 0, not the suggested 0.1


def test_format_value_reads_like_a_person_writes():
    assert [format_value(v) for v in (None, True, False, 1e-4, {"a": "1"}, ["x", "y"], 3)] == [
        "(not set)", "yes", "no", "0.0001", "a=1", "x, y", "3"]


def test_edit_reasks_the_field_and_the_questions_it_opens(project: Project):
    config = TrainConfig(cuda=False)
    asker = ScriptedAsker({**project.path_answers(), "net_dim": [16, 64], "network_type": ["LoRA", "LoCon"],
                           "conv_dim": 8, "alpha": CANCEL},
                          summary_actions=[("edit", "net_dim"), ("edit", "network_type"), "start"])
    walk(TRAIN, config, asker)
    assert config.get("alpha") == 8.0
    asked_before_summary = len(asker.asked)
    assert review(TRAIN, config, asker, save_json=save_into_folder) == "start"
    assert asker.asked[asked_before_summary:] == ["net_dim", "network_type", "conv_dim", "conv_alpha"]
    assert config.get("net_dim") == 64 and config.get("alpha") == 32.0  # alpha follows a dim until it is answered
    assert config.get("network_type") == "LoCon" and config.get("conv_dim") == 8
    assert len(asker.summaries) == 3
    assert {row.field: row.value for row in asker.summaries[1]}["net_dim"] == "64"


def test_edit_of_a_setting_without_a_question_asks_it_from_its_declaration(project: Project):
    config = TrainConfig(cuda=False)
    asker = ScriptedAsker({**project.path_answers(), "test_seed": 7, "optimizer_args": "weight_decay=0.01"},
                          summary_actions=[("edit", "test_seed"), ("edit", "optimizer_args"), "start"])
    walk(TRAIN, config, asker)
    review(TRAIN, config, asker, save_json=save_into_folder)
    assert config.get("test_seed") == 7 and config.origin("test_seed") == "asked"
    assert config.get("optimizer_args") == {"weight_decay": "0.01"}


def test_edit_of_a_setting_that_is_not_used_says_so(project: Project):
    config = TrainConfig(cuda=False)
    asker = ScriptedAsker(project.path_answers(), summary_actions=[("edit", "cosine_restarts"), "cancel"])
    walk(TRAIN, config, asker)
    config.set("scheduler", "constant")
    assert review(TRAIN, config, asker, save_json=save_into_folder) == "cancel"
    assert asker.messages[-1][0] == "info" and "not used" in asker.messages[-1][2]


def test_save_json_from_the_summary_asks_for_a_folder_and_writes_the_settings(project: Project):
    config = TrainConfig(cuda=False)
    asker = ScriptedAsker({**project.path_answers(), "net_dim": 12, "save_json_folder": str(project.json_folder)},
                          summary_actions=["save", "start"])
    walk(TRAIN, config, asker)
    assert review(TRAIN, config, asker, save_json=save_into_folder) == "start"
    assert asker.asked[-2:] == ["save_json_folder", "settings_format"]  # where, and as JSON or sd-scripts TOML
    saved = list(project.json_folder.glob("config-*.json"))
    assert len(saved) == 1
    content = json.loads(saved[0].read_text(encoding="utf-8"))
    assert content["net_dim"] == 12 and content["alpha"] == 6.0
    assert content["base_model"] == str(project.base_model) and content["config_version"] == 1
    assert asker.messages[-1][:2] == ("info", "Settings saved") and str(saved[0]) in asker.messages[-1][2]


def test_a_folder_dropped_on_a_path_row_is_kept_as_if_typed(project: Project, tmp_path: Path):
    config = TrainConfig(cuda=False)
    other_images = tmp_path / "other images"
    (other_images / "5_cat").mkdir(parents=True)
    asker = ScriptedAsker(project.path_answers(), summary_actions=[("drop", "img_folder", str(other_images)), "start"])
    walk(TRAIN, config, asker)
    asked_before_summary = len(asker.asked)
    assert review(TRAIN, config, asker, save_json=save_into_folder) == "start"
    assert asker.asked[asked_before_summary:] == []  # nothing else to ask: the drop is the answer
    assert config.get("img_folder") == str(other_images) and config.origin("img_folder") == "asked"
    assert {row.field: row.value for row in asker.summaries[-1]}["img_folder"] == str(other_images)


def test_a_dropped_file_that_does_not_fit_the_row_says_why_and_changes_nothing(project: Project):
    config = TrainConfig(cuda=False)
    asker = ScriptedAsker(project.path_answers(),
                          summary_actions=[("drop", "img_folder", str(project.prompts)), "cancel"])
    walk(TRAIN, config, asker)
    review(TRAIN, config, asker, save_json=save_into_folder)
    assert config.get("img_folder") == str(project.img_folder)
    assert asker.messages[-1] == ("error", "Image folder",
                                  f"{project.prompts} is not an existing folder; choose the image folder again.")


def test_a_prompts_file_dropped_on_its_row_asks_the_questions_it_opens(project: Project):
    config = TrainConfig(cuda=False)
    asker = ScriptedAsker({**project.path_answers(), "sample_images": False, "sample_every_n_steps": 50},
                          summary_actions=[("drop", "sample_prompts", str(project.prompts)), "start"])
    walk(TRAIN, config, asker)
    asked_before_summary = len(asker.asked)
    review(TRAIN, config, asker, save_json=save_into_folder)
    assert config.get("sample_prompts") == str(project.prompts)
    assert asker.asked[asked_before_summary:] == ["sample_sampler", "sample_unit", "sample_every_n_steps"]
    assert config.get("sample_every_n_steps") == 50


def test_path_rows_are_marked_for_drops_and_unused_ones_are_not(project: Project):
    config = TrainConfig(cuda=False)
    walk(TRAIN, config, ScriptedAsker(project.path_answers()))
    rows = {row.field: row for row in summary_rows(config)}
    assert rows["img_folder"].path_kind == "folder" and rows["base_model"].path_kind == "file"
    assert rows["net_dim"].path_kind is None
    assert {name for name, row in rows.items() if row.path_kind} == {
        field.name for field in FIELDS if field.path} - {name for name, row in rows.items() if "not used" in row.value}
