"""The config declaration: every field is complete and valid, values are checked, defaults follow the hardware."""

import subprocess
import sys
from pathlib import Path

import pytest

from sd_scripts.errors import UserFacingError
from wizard.config import FIELD_BY_NAME, FIELDS, ConfigError, TrainConfig, check_value
from wizard.defaults_table import markdown_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("field", FIELDS, ids=lambda field: field.name)
def test_every_field_has_help_label_group_and_a_default_valid_for_itself(field):
    assert field.help.strip() and field.label.strip() and field.group.strip()
    for cuda in (True, False):
        default = field.default_for(cuda)
        assert check_value(field, default) == default
        if field.choices is not None:
            assert default in field.choices


def test_field_names_are_unique_and_indexed():
    assert len(FIELD_BY_NAME) == len(FIELDS)


def test_the_fields_the_seed_project_and_the_task_name_are_declared():
    for name in ("base_model", "img_folder", "output_folder", "net_dim", "alpha", "scheduler", "warmup_lr_ratio",
                 "train_resolution", "save_every_n_epochs", "network_type", "conv_dim", "unit", "use_conv_cp",
                 "down_lr_weight", "conv_block_alphas", "optimizer_args", "xformers", "json_load_skip_list",
                 "multi_run_folder", "tokenizer_cache_dir", "sample_every_n_epochs"):
        assert name in FIELD_BY_NAME, name


def test_defaults_follow_the_hardware():
    with_cuda, without_cuda = TrainConfig(cuda=True), TrainConfig(cuda=False)
    assert (with_cuda.get("optimizer_type"), with_cuda.get("mixed_precision"), with_cuda.get("xformers")) == (
        "AdamW8bit", "fp16", True)
    assert (without_cuda.get("optimizer_type"), without_cuda.get("mixed_precision"), without_cuda.get("xformers")) == (
        "AdamW", "no", False)
    for config in (with_cuda, without_cuda):
        assert config.get("net_dim") == 32 and config.get("alpha") == 16.0 and config.get("learning_rate") == 1e-4
        assert config.get("optimizer_args") == {"weight_decay": "0.1", "betas": "0.9,0.99"}
        assert config.origin("optimizer_type") == "default"


def test_set_checks_types_and_names_key_value_and_expectation():
    config = TrainConfig(cuda=False)
    with pytest.raises(ConfigError) as caught:
        config.set("net_dim", "32")
    assert isinstance(caught.value, UserFacingError)
    message = caught.value.message
    assert "'net_dim'" in message and "'32'" in message and "whole number" in message
    for name, value in (("buckets", 1), ("net_dim", True), ("net_dim", 2.5), ("learning_rate", "1e-4"),
                        ("optimizer_args", ["weight_decay=0.1"]), ("json_load_skip_list", "base_model"),
                        ("net_dim", None), ("network_type", "LoRA-FA"), ("keep_tokens", -1),
                        ("caption_dropout_rate", 1.5), ("base_model", "model.txt"), ("img_folder", "")):
        with pytest.raises(ConfigError):
            config.set(name, value)
    with pytest.raises(ConfigError, match="not a setting"):
        config.set("no_such_setting", 1)


def test_zero_is_a_value_distinct_from_none():
    config = TrainConfig(cuda=False)
    config.set("text_encoder_lr", 0)
    config.set("noise_offset", 0.0)
    config.set("keep_tokens", 0)
    assert config.get("text_encoder_lr") == 0.0 and config.get("text_encoder_lr") is not None
    assert config.get("noise_offset") == 0.0
    config.set("text_encoder_lr", None)
    assert config.get("text_encoder_lr") is None


def test_set_normalises_only_losslessly_and_records_the_origin():
    config = TrainConfig(cuda=False)
    config.set("optimizer_type", "adamw8bit", origin="loaded")
    config.set("alpha", 8)
    config.set("optimizer_args", {"weight_decay": 0.01, "decouple": True})
    assert config.get("optimizer_type") == "AdamW8bit" and config.origin("optimizer_type") == "loaded"
    assert config.get("alpha") == 8.0 and isinstance(config.get("alpha"), float) and config.origin("alpha") == "asked"
    assert config.get("optimizer_args") == {"weight_decay": "0.01", "decouple": "True"}
    config.reset("alpha")
    assert config.get("alpha") == 16.0 and config.origin("alpha") == "default"


def test_copy_and_get_do_not_share_mutable_values():
    config = TrainConfig(cuda=True)
    config.get("optimizer_args")["weight_decay"] = "9"
    twin = config.copy()
    twin.set("optimizer_args", {"eps": "1e-8"})
    twin.set("net_dim", 8)
    assert config.get("optimizer_args") == {"weight_decay": "0.1", "betas": "0.9,0.99"}
    assert config.get("net_dim") == 32 and config.origin("net_dim") == "default"
    assert twin.cuda is True and twin.origin("net_dim") == "asked"


def test_to_dict_has_every_field_in_order_and_the_version():
    data = TrainConfig(cuda=False).to_dict()
    assert list(data) == ["config_version"] + [field.name for field in FIELDS]
    assert data["config_version"] == 1


def test_cuda_detection_does_not_import_torch():
    code = ("import sys; from wizard.hardware import cuda_available; from wizard.config import TrainConfig;"
            "answer = cuda_available(); TrainConfig();"
            "print(type(answer).__name__, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["bool", "False"]


def test_defaults_table_lists_every_field_with_machine_dependent_defaults():
    table = markdown_table()
    rows = table.strip().splitlines()
    assert len(rows) == 2 + len(FIELDS)
    assert "| optimizer | `optimizer_type` | AdamW8bit (AdamW without CUDA) |" in table
    assert "weight_decay=0.1, betas=0.9,0.99" in table
    result = subprocess.run([sys.executable, "-m", "wizard.defaults_table"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == table
