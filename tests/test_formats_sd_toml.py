"""sd-scripts --config_file TOML: import with [section] tables, export -> import round trip, lossy keys reported."""

from pathlib import Path

import pytest

from sd_scripts.args import TrainArgs
from sd_scripts.errors import UserFacingError
from wizard.config import TrainConfig
from wizard.formats import sd_toml
from wizard.translate import to_train_args

DATA = Path(__file__).parent / "data" / "formats"


def test_import_of_a_sectioned_sd_scripts_config():
    config, warnings = sd_toml.load(DATA / "sd_scripts_config.toml", cuda=False)
    assert warnings == []
    expected = {
        "base_model": "/models/sd-v1-5.safetensors", "img_folder": "/data/train", "output_folder": "/data/out",
        "train_resolution": 640, "height_resolution": 512, "min_bucket_resolution": 256,
        "max_bucket_resolution": 1024, "shuffle_captions": True, "keep_tokens": 2, "change_output_name": "tomlchar",
        "save_precision": "bf16", "batch_size": 4, "num_epochs": 8, "max_steps": None, "mixed_precision": "bf16",
        "gradient_checkpointing": True, "test_seed": 42, "clip_skip": 1, "max_clip_token_length": 225,
        "xformers": False, "noise_offset": 0.0357, "min_snr_gamma": 5.0, "optimizer_type": "AdamW8bit",
        "optimizer_args": {"weight_decay": "0.05", "betas": "0.9,0.999"}, "unet_lr": 1e-4, "text_encoder_lr": 5e-5,
        "scheduler": "cosine", "warmup_lr_ratio": 0.1, "network_type": "LoCon", "net_dim": 16, "alpha": 8.0,
        "conv_dim": 4, "conv_alpha": 2.0,
    }
    assert {name: config.get(name) for name in expected} == expected
    assert config.origin("net_dim") == "loaded"


def test_export_then_import_gives_the_same_trainer_settings(tmp_path):
    config = TrainConfig(cuda=True)
    for name, value in (("base_model", "/m/model.safetensors"), ("img_folder", "/d/img"), ("network_type", "LoHa"),
                        ("conv_dim", 8), ("use_conv_cp", True), ("warmup_lr_ratio", 0.05), ("max_steps", 500),
                        ("train_resolution", 768), ("height_resolution", 512), ("text_encoder_lr", 0.0),
                        ("noise_offset", 0.0), ("test_seed", None), ("sample_prompts", "/p/prompts.txt")):
        config.set(name, value)
    path = sd_toml.save(config, tmp_path / "run.toml")
    args, unknown = TrainArgs.from_toml(path)  # what the trainer's own CLI would read
    assert unknown == [] and args == to_train_args(config)
    back, warnings = sd_toml.load(path, cuda=True)
    assert warnings == []
    assert to_train_args(back) == to_train_args(config)
    with pytest.raises(UserFacingError, match="already exists"):
        sd_toml.save(config, path)
    sd_toml.save(config, path, overwrite=True)


def test_latents_cached_to_disk_alone_round_trip_as_the_caching_the_trainer_does(tmp_path):
    """cache_latents off with cache_latents_to_disk on caches (as in sd-scripts): the TOML says so, and reads back
    the same (the property test found a run where it did not)."""
    config = TrainConfig(cuda=False)
    for name, value in (("base_model", "/m/model.safetensors"), ("img_folder", "/d/img"), ("cache_latents", False),
                        ("cache_latents_to_disk", True), ("unet_only", True), ("cache_text_encoder_outputs", False),
                        ("cache_text_encoder_outputs_to_disk", True)):
        config.set(name, value)
    args = to_train_args(config)
    assert args.cache_latents and args.cache_text_encoder_outputs
    back, warnings = sd_toml.load(sd_toml.save(config, tmp_path / "run.toml"), cuda=False)
    assert warnings == [] and to_train_args(back) == args


def test_settings_the_wizard_cannot_hold_are_reported(tmp_path):
    path = tmp_path / "odd.toml"
    path.write_text('network_module = "networks.lora"\nnetwork_args = ["conv_dim=4", "dropout=0.1"]\n'
                    'full_fp16 = true\nno_such_option = 3\nlr_warmup_steps = 250\nmax_train_epochs = 3\n',
                    encoding="utf-8")
    config, warnings = sd_toml.load(path, cuda=False)
    assert config.get("network_type") == "LoCon"
    assert any("'no_such_option'" in warning for warning in warnings)
    assert any("'full_fp16'" in warning for warning in warnings)
    assert any("network arguments dropout=0.1 in odd.toml" in warning for warning in warnings)
    assert not any("conv_dim=4" in warning for warning in warnings)
    assert any("'lr_warmup_steps'" in warning for warning in warnings)  # steps with epochs: no ratio to keep


def test_broken_toml_is_one_sentence(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("network_dim = = 4\n", encoding="utf-8")
    with pytest.raises(UserFacingError, match="not valid TOML"):
        sd_toml.load(path, cuda=False)
