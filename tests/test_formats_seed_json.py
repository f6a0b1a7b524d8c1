"""The wizard's JSON (the seed project's format + config_version): round trip, old files, bad input, skip list."""

import json
import re
import shutil
from pathlib import Path

import pytest

from sd_scripts.errors import UserFacingError
from wizard.config import FIELDS, ConfigError, TrainConfig
from wizard.formats import seed_json
from wizard.formats.seed_json import FLOW_FIELDS

DATA = Path(__file__).parent / "data" / "formats"


def unusual_value(field):
    """A valid value different from the default, preferring the edge cases 0, dicts and lists."""
    if field.choices is not None:
        return next(choice for choice in reversed(field.choices) if choice != field.default)
    if field.type is bool:
        return not field.default
    if field.path is not None:
        suffix = f".{field.extensions[-1]}" if field.extensions else ""
        return f"/tmp/ünïcode place/{field.name}{suffix}"
    if field.type is str:
        return f"{field.name}, with ünïcode and \"quotes\""
    if field.type is dict:
        return {"eps": "1e-8", "betas": "0.9,0.999", "decouple": "True"}
    if field.type is list:
        return ["base_model", "img_folder"]
    low = field.minimum if field.minimum is not None else 0
    value = field.type(low)
    if value == field.default:
        value = field.type(low + 1)
    return value


def every_field_changed() -> TrainConfig:
    config = TrainConfig(cuda=False)
    for field in FIELDS:
        config.set(field.name, unusual_value(field))
    return config


def every_nullable_field_empty() -> TrainConfig:
    config = TrainConfig(cuda=True)
    for field in FIELDS:
        if field.nullable:
            config.set(field.name, None)
    config.set("optimizer_args", {})
    return config


@pytest.mark.parametrize("make", [every_field_changed, every_nullable_field_empty])
def test_config_to_json_to_config_is_identity(make, tmp_path):
    config = make()
    path = seed_json.save(config, tmp_path, name="round trip")
    loaded, warnings = seed_json.load(path, TrainConfig(cuda=config.cuda))
    assert warnings == []
    original, again = config.to_dict(), loaded.to_dict()
    for name in original:
        if name not in FLOW_FIELDS:
            assert again[name] == original[name], name
            assert type(again[name]) is type(original[name]), name
    assert all(loaded.origin(field.name) == "loaded" for field in FIELDS if field.name not in FLOW_FIELDS)


def test_flow_fields_are_written_but_never_steer_the_loading_session(tmp_path):
    config = TrainConfig(cuda=False)
    config.set("save_json_folder", str(tmp_path))
    config.set("save_json_only", True)
    path = seed_json.save(config, tmp_path)
    assert json.loads(path.read_text(encoding="utf-8"))["save_json_only"] is True
    loaded, _ = seed_json.load(path, TrainConfig(cuda=False))
    assert loaded.get("save_json_only") is False and loaded.get("save_json_folder") is None
    assert loaded.origin("save_json_only") == "default"


def test_file_name_format_and_never_overwriting(tmp_path):
    config = TrainConfig(cuda=False)
    first = seed_json.save(config, tmp_path, name="my/char")
    second = seed_json.save(config, tmp_path, name="my/char")
    plain = seed_json.save(config, tmp_path)
    assert re.fullmatch(r"config-\d+\.\d+-my_char\.json", first.name)
    assert re.fullmatch(r"config-\d+\.\d+\.json", plain.name)
    assert first != second and first.exists() and second.exists()
    text = first.read_text(encoding="utf-8")
    assert text.startswith('{\n    "config_version": 1,\n    "base_model": null,')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name, plain.name])
    with pytest.raises(UserFacingError, match="does not exist"):
        seed_json.save(config, tmp_path / "missing")


def test_seed_project_file_with_deprecated_locon_and_8bit_keys():
    config, warnings = seed_json.load(DATA / "seed_apr2023_locon.json", TrainConfig(cuda=False))
    assert warnings == []
    assert config.get("optimizer_type") == "AdamW8bit"  # use_8bit_adam wins, as sd-scripts made it win
    assert (config.get("network_type"), config.get("conv_dim"), config.get("conv_alpha")) == ("LoCon", 16, 8.0)
    assert config.get("save_every_n_epochs") == 2  # save_at_n_epochs
    assert config.get("sample_every_n_epochs") == 1  # the sample_every_n_epoch typo
    assert config.get("base_model") == "/home/artist/models/anything-v4.5-pruned.safetensors"
    assert config.get("reg_img_folder") is None  # "" meant unset
    assert config.get("change_output_name") == "mychar_v1" and config.get("save_json_name") == "mychar"
    assert (config.get("scheduler"), config.get("warmup_lr_ratio"), config.get("text_encoder_lr")) == (
        "cosine", 0.05, 5e-05)
    assert (config.get("batch_size"), config.get("num_epochs"), config.get("keep_tokens")) == (2, 10, 1)
    assert config.get("bucket_reso_steps") == 64 and config.get("gradient_acc_steps") == 1  # null = sd-scripts' value
    assert config.get("caption_dropout_rate") == 0.0 and config.get("sample_sampler") == "ddim"
    assert config.get("min_snr_gamma") == 5.0 and config.get("alpha") == 16.0
    assert config.get("save_json_only") is False  # flow field, not loaded
    assert config.origin("net_dim") == "loaded" and config.origin("unit") == "default"


def test_seed_project_file_with_lyco_network_args_and_lion():
    config, warnings = seed_json.load(DATA / "seed_may2023_loha.json", TrainConfig(cuda=True))
    assert (config.get("network_type"), config.get("conv_dim"), config.get("conv_alpha")) == ("LoHa", 8, 4.0)
    assert config.get("use_conv_cp") is False  # disable_conv_cp
    assert config.get("optimizer_type") == "Lion"
    assert (config.get("v2"), config.get("v_parameterization"), config.get("clip_skip")) == (True, True, 1)
    assert (config.get("train_resolution"), config.get("height_resolution")) == (768, 640)
    assert config.get("max_steps") == 3000
    assert config.get("max_clip_token_length") == 75  # null = sd-scripts' 75
    assert config.get("keep_tokens") == 0 and config.get("multires_noise_iterations") == 6
    assert config.get("sample_prompts") == "C:\\lora\\style\\prompts.txt"
    assert len(warnings) == 1 and "'weighted_captions'" in warnings[0]


def test_json_load_skip_list_keeps_current_values(tmp_path):
    current = TrainConfig(cuda=False)
    current.set("json_load_skip_list", ["base_model", "img_folder", "optimizer_type"])
    current.set("img_folder", "/mine/img")
    config, _ = seed_json.load(DATA / "seed_apr2023_locon.json", current)
    assert config.get("img_folder") == "/mine/img" and config.origin("img_folder") == "asked"
    assert config.get("base_model") is None and config.origin("base_model") == "default"
    assert config.get("optimizer_type") == "AdamW"  # use_8bit_adam maps onto a skipped key
    assert config.get("output_folder") == "/home/artist/lora/mychar/out"
    assert current.get("output_folder") is None  # the config handed in is not changed


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "settings.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_not_json_is_one_clear_sentence(tmp_path):
    with pytest.raises(UserFacingError) as caught:
        seed_json.load(write(tmp_path, "base_model = 'x'\n"), TrainConfig(cuda=False))
    assert "settings.json is not valid JSON (line 1" in caught.value.message
    with pytest.raises(UserFacingError, match="not a settings object"):
        seed_json.load(write(tmp_path, "[1, 2]"), TrainConfig(cuda=False))
    with pytest.raises(UserFacingError, match="does not exist"):
        seed_json.load(tmp_path / "nope.json", TrainConfig(cuda=False))


def test_wrong_type_names_file_key_value_and_expectation(tmp_path):
    with pytest.raises(ConfigError) as caught:
        seed_json.load(write(tmp_path, '{"config_version": 1, "net_dim": "big"}'), TrainConfig(cuda=False))
    message = caught.value.message
    assert message.startswith("In settings.json, 'net_dim' is 'big', but it must be a whole number")
    assert message.count(".") <= 2 and "\n" not in message


def test_unknown_key_warns_and_loading_continues(tmp_path):
    config, warnings = seed_json.load(write(tmp_path, '{"config_version": 1, "net_dimm": 8, "net_dim": 8}'),
                                      TrainConfig(cuda=False))
    assert config.get("net_dim") == 8
    assert warnings == ["'net_dimm' in settings.json is not a setting of this wizard; it was ignored."]


def test_empty_path_strings_mean_unset_and_newer_versions_are_refused(tmp_path):
    config, _ = seed_json.load(write(tmp_path, '{"config_version": 1, "vae": "", "base_model": "  "}'),
                               TrainConfig(cuda=False))
    assert config.get("vae") is None and config.get("base_model") is None
    with pytest.raises(UserFacingError, match="newer version"):
        seed_json.load(write(tmp_path, '{"config_version": 99}'), TrainConfig(cuda=False))


def test_a_kohya_gui_file_given_to_the_json_loader_is_imported(tmp_path):
    copied = tmp_path / "kohya.json"
    shutil.copy(DATA / "kohya_ss_lora_mar2023.json", copied)  # the import writes the sample prompts beside it
    config, warnings = seed_json.load(copied, TrainConfig(cuda=False))
    assert config.get("net_dim") == 64 and config.get("warmup_lr_ratio") == 0.1
    assert "Kohya_ss GUI settings file" in warnings[0]
