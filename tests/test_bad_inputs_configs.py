"""Bad-input corpus, settings files (issue 13 item 1): not JSON, wrong types, unknown keys, values out of range,
Kohya_ss GUI and sd-scripts files with keys missing, a file from a newer wizard, text that is not UTF-8.

Every file goes through the one entry the wizard uses (`wizard.formats.settings_file.load`) or the trainer's command
line (`sd_scripts.train.main`): one sentence naming the file and the setting, or warnings naming what was ignored;
never a traceback, and loading writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bad_input_builders import json_file, snapshot
from sd_scripts.errors import UserFacingError
from sd_scripts.train import main as train_main
from wizard.config import CONFIG_VERSION
from wizard.formats import settings_file


def load_refused(path: Path) -> str:
    before = snapshot(path.parent)
    with pytest.raises(UserFacingError) as caught:
        settings_file.load(path)
    assert snapshot(path.parent) == before
    return caught.value.message


def test_a_json_with_a_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{\n  "net_dim": 32,\n  "alpha": 16,,\n}', encoding="utf-8")
    assert load_refused(path) == ("run.json is not valid JSON (line 3, column 15: Expecting property name enclosed in "
                                  "double quotes); choose a settings file saved by the wizard or fix that line.")


def test_a_file_that_is_neither_json_toml_nor_a_lora(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("train my character = please!", encoding="utf-8")
    assert load_refused(path) == ("notes.txt is neither a settings JSON (the wizard's or the Kohya_ss GUI's), an "
                                  "sd-scripts TOML nor a LoRA; choose one of those.")


def test_a_binary_file_is_not_mistaken_for_settings(tmp_path):
    path = tmp_path / "photo.json"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    assert load_refused(path) == ("photo.json is not a text file or a LoRA; choose a settings .json or .toml file, or "
                                  "a LoRA .safetensors.")


def test_a_json_list_instead_of_settings(tmp_path):
    assert load_refused(json_file(tmp_path / "list.json", [1, 2, 3])) == (
        "list.json is neither a settings JSON (the wizard's or the Kohya_ss GUI's), an sd-scripts TOML nor a LoRA; "
        "choose one of those.")


def test_a_wrong_type_names_the_file_the_key_and_the_value(tmp_path):
    message = load_refused(json_file(tmp_path / "run.json", {"config_version": CONFIG_VERSION, "net_dim": "big"}))
    assert message.startswith("In run.json, ") and "'net_dim'" in message and "'big'" in message


def test_a_value_out_of_range_names_the_setting_and_its_range(tmp_path):
    message = load_refused(json_file(tmp_path / "run.json", {"config_version": CONFIG_VERSION, "net_dim": 0}))
    assert message.startswith("In run.json, ") and "net_dim" in message and "1" in message


def test_unknown_keys_are_named_and_ignored(tmp_path):
    path = json_file(tmp_path / "run.json", {"config_version": CONFIG_VERSION, "net_dim": 8, "turbo_mode": True})
    config, notes = settings_file.load(path)
    assert config.get("net_dim") == 8
    assert "'turbo_mode' in run.json is not a setting of this wizard; it was ignored." in notes


def test_a_json_from_a_newer_version_of_the_wizard(tmp_path):
    path = json_file(tmp_path / "future.json", {"config_version": CONFIG_VERSION + 1, "net_dim": 8})
    assert load_refused(path) == (f"future.json was saved by a newer version of the wizard (settings version "
                                  f"{CONFIG_VERSION + 1}); update the wizard to load it.")


def test_a_kohya_gui_file_with_most_keys_missing_loads_the_rest_as_defaults(tmp_path):
    path = json_file(tmp_path / "gui.json", {"LoRA_type": "Standard", "network_dim": 16})
    config, notes = settings_file.load(path)
    assert config.get("net_dim") == 16
    assert config.origin("learning_rate") == "default" and config.origin("base_model") == "default"
    assert notes[0] == "gui.json is a Kohya_ss GUI settings file; it was imported through its own table."


def test_a_kohya_gui_value_of_the_wrong_type_names_the_gui_key(tmp_path):
    path = json_file(tmp_path / "gui.json", {"LoRA_type": "Standard", "network_dim": "lots"})
    message = load_refused(path)
    assert message.startswith("In gui.json") and "network_dim" in message and "lots" in message


def test_an_sd_scripts_toml_with_only_the_model_loads_with_sd_scripts_defaults(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('pretrained_model_name_or_path = "model.safetensors"\n', encoding="utf-8")
    config, notes = settings_file.load(path)
    assert config.get("base_model") == "model.safetensors"
    assert notes[0] == "run.toml is an sd-scripts TOML; settings it does not hold are sd-scripts' defaults."


def test_the_trainer_says_which_setting_an_sd_scripts_toml_lacks(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('[model]\npretrained_model_name_or_path = "model.safetensors"\n', encoding="utf-8")
    assert train_main(["--config_file", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Training failed: No image folder is set; choose the folder that holds your N_name image folders." in err
    assert "Traceback" not in err


def test_the_trainer_names_a_wrong_type_in_an_sd_scripts_toml(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('network_dim = "eight"\n', encoding="utf-8")
    assert train_main(["--config_file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "network_dim" in err and "eight" in err and "Traceback" not in err


def test_the_trainer_refuses_a_toml_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_bytes('training_comment = "café"\n'.encode("cp1252"))
    assert train_main(["--config_file", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (f"The settings file {path} is not UTF-8 text (TOML always is); save it "
                                               "again as UTF-8.")


def test_the_trainer_refuses_an_out_of_range_value_before_loading(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('pretrained_model_name_or_path = "m.safetensors"\ntrain_data_dir = "i"\noutput_dir = "o"\n'
                    'network_dim = 0\n', encoding="utf-8")
    assert train_main(["--config_file", str(path)]) == 1
    assert "network_dim" in capsys.readouterr().err
