"""The walker's mechanisms: Back, Cancel versus 0, validation, stopping, skipping loaded settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import questions
from test_graph_fixtures import Project, make_project
from wizard.askers.scripted import ScriptedAsker, ScriptExhausted
from wizard.config import TrainConfig
from wizard.formats import seed_json
from wizard.graph import walk
from wizard.question import BACK, CANCEL

TRAIN = questions.FLOWS["train"]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


def run(answers: dict, confirms: list[bool] | None = None, config: TrainConfig | None = None):
    config = config or TrainConfig(cuda=False)
    asker = ScriptedAsker(answers, confirms=confirms)
    outcome = walk(TRAIN, config, asker)
    return outcome, config, asker


def test_back_returns_to_the_previous_asked_question_and_undoes_its_answer(project: Project):
    outcome, config, asker = run({**project.path_answers(), "v2": [True, False], "v_parameterization": [BACK]})
    assert outcome == "done"
    position = asker.asked.index("v2")
    assert asker.asked[position:position + 4] == ["v2", "v_parameterization", "v2", "realistic"]
    assert config.get("v2") is False and config.get("v_parameterization") is False


def test_back_restores_what_the_previous_answer_changed(project: Project):
    answers = {**project.path_answers(), "optimizer": ["DAdaptation", "AdamW"], "learning_rate": [BACK, 2e-4]}
    outcome, config, asker = run(answers)
    assert asker.defaults["learning_rate"] == 1e-4  # the second time, after AdamW: DAdaptation's 1.0 is gone
    assert "decouple" not in config.get("optimizer_args")
    assert config.get("learning_rate") == 2e-4 and config.get("unet_lr") is None


def test_back_skips_questions_that_were_not_asked(project: Project):
    # use_reg_images answered no closes the folder question: Back from tag_list lands on the gate itself
    outcome, config, asker = run({**project.path_answers(), "tag_list": [BACK, False], "use_reg_images": [False, False]})
    position = asker.asked.index("tag_list")
    assert asker.asked[position - 1:position + 3] == ["use_reg_images", "tag_list", "use_reg_images", "tag_list"]


def test_cancel_keeps_the_value_but_zero_is_stored_as_zero(project: Project):
    _, config, _ = run({**project.path_answers(), "use_keep_tokens": True, "keep_tokens": 0,
                        "block_weights": True, "mid_lr_weight": 0.0, "net_dim": CANCEL})
    assert config.get("keep_tokens") == 0 and config.origin("keep_tokens") == "asked"
    assert config.get("mid_lr_weight") == 0.0
    assert config.get("net_dim") == 32 and config.origin("net_dim") == "default"

    _, config, _ = run({**project.path_answers(), "use_keep_tokens": True, "keep_tokens": CANCEL})
    assert config.get("keep_tokens") == 1  # the value the gate put in, as the popups' Cancel gave

    _, config, asker = run({**project.path_answers(), "use_reg_images": CANCEL, "sample_images": CANCEL})
    assert "reg_img_folder" not in asker.asked and "sample_prompts" not in asker.asked  # Cancel on a gate is its no


def test_a_rejected_answer_is_asked_again_with_the_reason(project: Project):
    empty_folder = project.img_folder.parent / "flat"
    empty_folder.mkdir()
    answers = {**project.path_answers(), "img_folder": [str(empty_folder), str(project.img_folder)],
               "net_dim": [0, 8], "network_type": "DyLoRA", "unit": [3, 4]}
    outcome, config, asker = run(answers)
    reasons = dict(asker.errors)
    assert "<repeats>_<name>" in reasons["img_folder"]
    assert "'net_dim' is 0" in reasons["net_dim"]
    assert "divide the dim (8)" in reasons["unit"]
    assert config.get("net_dim") == 8 and config.get("unit") == 4 and config.get("img_folder") == str(project.img_folder)


def test_a_wrong_extension_is_rejected(project: Project):
    wrong = project.base_model.with_suffix(".bin")
    wrong.write_bytes(b"stub")
    _, config, asker = run({**project.path_answers(), "base_model": [str(wrong), str(project.base_model)]})
    assert "must end in .safetensors or .ckpt" in dict(asker.errors)["base_model"]


def test_cancel_on_a_required_file_offers_to_stop(project: Project):
    outcome, config, asker = run({**project.path_answers(), "base_model": CANCEL}, confirms=[True])
    assert outcome == "cancelled" and asker.asked == ["base_model"]
    assert asker.messages[0][0] == "confirm"

    outcome, config, asker = run({**project.path_answers(), "base_model": [CANCEL, str(project.base_model)]},
                                 confirms=[False])
    assert outcome == "done" and asker.asked[:2] == ["base_model", "base_model"]
    assert asker.errors == [("base_model", "Choose the base model to go on.")]


def test_the_scripted_asker_refuses_to_loop_on_a_rejected_default(project: Project):
    with pytest.raises(ScriptExhausted, match="img_folder"):
        run({"base_model": str(project.base_model)})


def test_settings_from_a_loaded_json_are_not_asked(project: Project):
    partial = project.json_folder / "partial.json"
    partial.write_text(json.dumps({"config_version": 1, "net_dim": 8, "alpha": 4, "v2": True,
                                   "v_parameterization": False, "optimizer_type": "Lion"}), encoding="utf-8")
    config, _ = seed_json.load(partial, into=TrainConfig(cuda=False))
    outcome, config, asker = run(project.path_answers(), config=config)
    for loaded in ("net_dim", "alpha", "v2", "v_parameterization", "optimizer"):
        assert loaded not in asker.asked
    assert "learning_rate" in asker.asked and "realistic" in asker.asked
    assert config.get("net_dim") == 8 and config.origin("net_dim") == "loaded"


def test_a_complete_json_asks_nothing_and_new_folders_asks_only_the_paths(project: Project):
    source = TrainConfig(cuda=False)
    for name, value in project.path_answers().items():
        source.set(name, value)
    saved = seed_json.save(source, project.json_folder)

    config, _ = seed_json.load(saved, into=TrainConfig(cuda=False))
    outcome, _, asker = run({}, config=config)
    assert outcome == "done" and asker.asked == []

    choosing = TrainConfig(cuda=False)
    choosing.set("json_load_skip_list", ["base_model", "img_folder", "output_folder", "change_output_name"])
    config, _ = seed_json.load(saved, into=choosing)
    outcome, _, asker = run(project.path_answers(), config=config)
    assert asker.asked == ["base_model", "img_folder", "output_folder", "output_name"]
