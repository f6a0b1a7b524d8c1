"""Kohya_ss GUI JSON import: percent warmup, "" as unset, string numbers, optimizer and LoRA type, prompts text."""

import json
import shutil
from pathlib import Path

import pytest

from wizard.config import ConfigError, TrainConfig
from wizard.formats import kohya_gui

DATA = Path(__file__).parent / "data" / "formats"


@pytest.fixture
def gui_file(tmp_path) -> Path:
    copied = tmp_path / "mychar_lora.json"
    shutil.copy(DATA / "kohya_ss_lora_mar2023.json", copied)
    return copied


def write_gui(tmp_path, **values) -> Path:
    data = json.loads((DATA / "kohya_ss_lora_mar2023.json").read_text(encoding="utf-8"))
    data.update(values)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_mar_2023_lora_file_imports_with_the_right_values(gui_file):
    config, warnings = kohya_gui.load(gui_file, TrainConfig(cuda=False))
    expected = {
        "base_model": "D:/models/v1-5-pruned-emaonly.safetensors",
        "img_folder": "D:/lora/mychar/img",
        "output_folder": "D:/lora/mychar/model",
        "reg_img_folder": None,  # "" = unset, not a path to check
        "log_dir": None,
        "resume": None,
        "lora_model_for_resume": None,
        "train_resolution": 512,
        "height_resolution": 640,
        "learning_rate": 1e-4,
        "text_encoder_lr": 5e-5,
        "unet_lr": 1e-4,
        "scheduler": "cosine_with_restarts",
        "cosine_restarts": 1,  # "" kept the wizard's value
        "warmup_lr_ratio": 0.1,  # 10 percent
        "batch_size": 2,
        "num_epochs": 4,
        "save_every_n_epochs": 1,
        "test_seed": 1234,
        "num_workers": 1,
        "persistent_workers": False,
        "max_clip_token_length": 225,
        "keep_tokens": 1,
        "gradient_acc_steps": 1,
        "bucket_reso_steps": 64,
        "bucket_no_upscale": True,
        "caption_dropout_rate": 0.05,
        "caption_dropout_every_n_epochs": 0,
        "optimizer_type": "Lion",
        "optimizer_args": {"weight_decay": "0.1", "betas": "0.9,0.99"},
        "noise_offset": 0.05,
        "min_snr_gamma": None,  # 0 = off in the GUI
        "network_type": "LoCon",
        "net_dim": 64,
        "alpha": 32.0,
        "conv_dim": 8,
        "conv_alpha": 1.0,
        "sample_every_n_steps": None,
        "sample_every_n_epochs": 1,
        "sample_sampler": "euler_a",
        "change_output_name": "mychar",
        "training_comment": "trigger: mychar",
        "shuffle_captions": True,
        "xformers": True,
        "mixed_precision": "fp16",
    }
    assert {name: config.get(name) for name in expected} == expected
    assert config.origin("warmup_lr_ratio") == "loaded" and config.origin("cosine_restarts") == "default"
    assert warnings == []

    prompts = Path(config.get("sample_prompts"))
    assert prompts == (gui_file.parent / "mychar_lora-sample-prompts.txt").resolve()
    assert prompts.read_text(encoding="utf-8").splitlines() == [
        "mychar, 1girl, smile --n lowres, bad anatomy --w 512 --h 640 --d 1",
        "mychar, standing, full body --w 512 --h 768",
    ]
    again, _ = kohya_gui.load(gui_file, TrainConfig(cuda=False))
    assert again.get("sample_prompts") == str(prompts)  # same prompts: the file is reused, not duplicated


def test_lora_types_zero_learning_rates_and_old_optimizer_check_box(tmp_path):
    path = write_gui(tmp_path, LoRA_type="LyCORIS/LoHa", conv_dim="4", conv_alpha="2", text_encoder_lr="0",
                     optimizer="", use_8bit_adam=True, optimizer_args="", sample_prompts="", lr_warmup="",
                     max_train_epochs="6", max_resolution="768,768", seed="")
    config, _ = kohya_gui.load(path, TrainConfig(cuda=False))
    assert (config.get("network_type"), config.get("conv_dim"), config.get("conv_alpha")) == ("LoHa", 4, 2.0)
    assert config.get("unet_only") is True and config.get("text_encoder_lr") is None
    assert config.get("optimizer_type") == "AdamW8bit" and config.get("optimizer_args") == {}
    assert config.get("sample_prompts") is None and config.get("warmup_lr_ratio") is None
    assert config.get("num_epochs") == 6  # max_train_epochs overrides epoch
    assert (config.get("train_resolution"), config.get("height_resolution"), config.get("test_seed")) == (768, None, 23)

    standard, _ = kohya_gui.load(write_gui(tmp_path, LoRA_type="Standard", conv_dim=1), TrainConfig(cuda=False))
    assert standard.get("network_type") == "LoRA" and standard.get("conv_dim") == 32  # conv ignored for Standard
    dylora, _ = kohya_gui.load(write_gui(tmp_path, LoRA_type="Kohya DyLoRA", unit="8", conv_dim=64),
                               TrainConfig(cuda=False))
    assert (dylora.get("network_type"), dylora.get("unit"), dylora.get("conv_dim")) == ("DyLoRA", 8, 64)


def test_hub_names_unknown_keys_and_unsupported_settings_are_warnings(tmp_path):
    path = write_gui(tmp_path, pretrained_model_name_or_path="runwayml/stable-diffusion-v1-5", full_fp16=True,
                     some_future_key=1)
    config, warnings = kohya_gui.load(path, TrainConfig(cuda=False))
    assert config.get("base_model") is None
    assert any("Hugging Face model name" in warning for warning in warnings)
    assert any("full_fp16" in warning for warning in warnings)
    assert any("some_future_key" in warning and "edited.json" in warning for warning in warnings)


def test_bad_values_name_the_gui_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'learning_rate' is 'fast', but it must be a number"):
        kohya_gui.load(write_gui(tmp_path, learning_rate="fast"), TrainConfig(cuda=False))
    with pytest.raises(ConfigError, match="LoRA_type"):
        kohya_gui.load(write_gui(tmp_path, LoRA_type="LoRA-FA"), TrainConfig(cuda=False))
    with pytest.raises(ConfigError, match=r"Kohya_ss key 'max_token_length'.*one of 75, 150, 225"):
        kohya_gui.load(write_gui(tmp_path, max_token_length="100"), TrainConfig(cuda=False))


def test_skip_list_is_honoured(tmp_path, gui_file):
    current = TrainConfig(cuda=False)
    current.set("json_load_skip_list", ["output_folder", "net_dim"])
    config, _ = kohya_gui.load(gui_file, current)
    assert config.get("output_folder") is None and config.get("net_dim") == 32
    assert config.get("img_folder") == "D:/lora/mychar/img"
