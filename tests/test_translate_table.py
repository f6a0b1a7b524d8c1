"""The one translation TrainConfig <-> TrainArgs: complete, kohya-named, and reversible."""

import pytest

from sd_scripts.args import TrainArgs
from sd_scripts.errors import UserFacingError
from sd_scripts.training.validation import validate_args
from wizard.config import ConfigError, TrainConfig
from wizard.summary import summary_rows
from wizard.translate import from_train_args, to_train_args, train_args_values


def config_with(cuda: bool = True, **values) -> TrainConfig:
    config = TrainConfig(cuda=cuda)
    for name, value in values.items():
        config.set(name, value)
    return config


def test_every_trainargs_field_is_set_explicitly():
    assert set(train_args_values(TrainConfig(cuda=True))) == set(TrainArgs.field_names())


def test_defaults_translate_to_the_seed_projects_kohya_call():
    args = to_train_args(config_with(base_model="/m/model.safetensors", img_folder="/d/img", output_folder="/d/out"))
    assert args.pretrained_model_name_or_path == "/m/model.safetensors"
    assert (args.train_data_dir, args.output_dir) == ("/d/img", "/d/out")
    assert (args.network_module, args.network_dim, args.network_alpha, args.network_args) == (
        "networks.lora", 32, 16.0, [])
    assert (args.optimizer_type, args.optimizer_args) == ("AdamW8bit", ["weight_decay=0.1", "betas=0.9,0.99"])
    assert (args.learning_rate, args.lr_scheduler, args.lr_scheduler_num_cycles) == (1e-4, "cosine_with_restarts", 1)
    assert (args.resolution, args.enable_bucket, args.min_bucket_reso, args.max_bucket_reso) == ("512", True, 320, 960)
    assert (args.max_train_epochs, args.train_batch_size, args.seed, args.clip_skip) == (1, 1, 23, 2)
    assert (args.max_token_length, args.caption_extension, args.mixed_precision) == (150, ".txt", "fp16")
    assert (args.save_precision, args.save_model_as, args.cache_latents) == ("fp16", "safetensors", True)
    assert (args.max_data_loader_n_workers, args.persistent_data_loader_workers) == (1, True)
    assert args.xformers and not args.sdpa


def test_warmup_ratio_passes_through_as_a_ratio_and_steps_beat_epochs():
    args = to_train_args(config_with(warmup_lr_ratio=0.05, max_steps=900, num_epochs=7))
    assert args.lr_warmup_steps == 0.05
    assert (args.max_train_steps, args.max_train_epochs) == (900, None)
    assert to_train_args(config_with()).lr_warmup_steps == 0


def test_resolution_renames_and_cpu_attention():
    args = to_train_args(config_with(cuda=False, train_resolution=768, height_resolution=512, max_clip_token_length=75,
                                     shuffle_captions=True, keep_tokens=0, lora_model_for_resume="/l/old.safetensors",
                                     unet_only=True, no_meta=True, test_seed=None, gradient_acc_steps=4))
    assert args.resolution == "768,512" and args.max_token_length is None
    assert args.shuffle_caption and args.keep_tokens == 0 and args.network_weights == "/l/old.safetensors"
    assert args.network_train_unet_only and args.no_metadata and args.seed is None
    assert args.gradient_accumulation_steps == 4
    assert (args.optimizer_type, args.mixed_precision, args.xformers, args.sdpa) == ("AdamW", "no", False, True)


@pytest.mark.parametrize(
    "values, module, network_args",
    [
        ({"network_type": "LoRA"}, "networks.lora", []),
        ({"network_type": "LoCon", "conv_dim": 8}, "networks.lora", ["conv_dim=8", "conv_alpha=8"]),
        ({"network_type": "LoCon", "conv_dim": 8, "conv_alpha": 0.5}, "networks.lora",
         ["conv_dim=8", "conv_alpha=0.5"]),
        ({"network_type": "LoHa", "conv_dim": 4, "conv_alpha": 2, "use_conv_cp": True}, "lycoris.kohya",
         ["algo=loha", "conv_dim=4", "conv_alpha=2", "use_tucker=True"]),
        ({"network_type": "LoKr", "conv_dim": None, "lokr_factor": 8, "lokr_full_matrix": True, "dora_wd": True},
         "lycoris.kohya", ["algo=lokr", "dora_wd=True", "factor=8", "full_matrix=True"]),
        ({"network_type": "LyCORIS LoCon", "conv_dim": 8, "lycoris_preset": "attn-mlp",
          "rank_dropout": 0.2, "module_dropout": 0.05}, "lycoris.kohya",
         ["algo=locon", "conv_dim=8", "conv_alpha=8", "preset=attn-mlp", "rank_dropout=0.2", "module_dropout=0.05"]),
        ({"network_type": "IA3", "lycoris_preset": "ia3"}, "lycoris.kohya", ["algo=ia3", "preset=ia3"]),
        ({"network_type": "DyLoRA", "net_dim": 16, "conv_dim": 16, "unit": 8}, "networks.dylora",
         ["conv_dim=16", "conv_alpha=16", "unit=8"]),
        ({"network_type": "LoRA", "down_lr_weight": "sine", "mid_lr_weight": 0.5, "up_lr_weight": "zeros",
          "block_dims": ",".join(["4"] * 25)}, "networks.lora",
         ["down_lr_weight=sine", "mid_lr_weight=0.5", "up_lr_weight=zeros", "block_dims=" + ",".join(["4"] * 25)]),
    ],
)
def test_network_types_and_their_arguments(values, module, network_args):
    args = to_train_args(config_with(**values))
    assert (args.network_module, args.network_args) == (module, network_args)
    back = from_train_args(args, cuda=True)
    assert back.get("network_type") == values["network_type"]
    assert to_train_args(back).network_args == network_args


def test_network_settings_that_cannot_work_are_refused_in_one_sentence():
    with pytest.raises(ConfigError, match=r"LoCon needs Conv dim \(conv_dim\)"):
        to_train_args(config_with(network_type="LoCon", conv_dim=None))
    with pytest.raises(UserFacingError, match="divisible by 4"):
        validate_args(to_train_args(config_with(network_type="DyLoRA", net_dim=30, unit=4, base_model="/m.ckpt",
                                                img_folder="/i", output_folder="/o")))


def test_settings_a_network_type_does_not_take_are_not_passed_and_the_summary_says_so():
    config = config_with(network_type="LoHa", down_lr_weight="sine", conv_block_dims=",".join(["4"] * 25))
    assert to_train_args(config).network_args == ["algo=loha", "conv_dim=32", "conv_alpha=32"]
    rows = {row.field: row.value for row in summary_rows(config)}
    assert rows["down_lr_weight"] == rows["conv_block_dims"] == "(not used by LoHa)"
    assert rows["conv_dim"] == "32"


def test_optimizer_arguments_betas_dropped_where_unknown_and_dadaptation_decoupled():
    assert to_train_args(config_with(optimizer_type="SGDNesterov")).optimizer_args == ["weight_decay=0.1"]
    assert to_train_args(config_with(optimizer_type="DAdaptation", learning_rate=1.0)).optimizer_args == [
        "weight_decay=0.1", "betas=0.9,0.99", "decouple=True"]


def test_config_to_args_to_config_keeps_what_the_trainer_sees():
    config = config_with(base_model="/m/a.ckpt", img_folder="/i", reg_img_folder="/r", output_folder="/o",
                         change_output_name="name", net_dim=8, alpha=1, network_type="LoCon", conv_dim=4,
                         conv_alpha=1, learning_rate=3e-4, unet_lr=0, text_encoder_lr=1e-5, scheduler="polynomial",
                         scheduler_power=2.0, warmup_lr_ratio=0.1, train_resolution=640, batch_size=3,
                         num_epochs=5, save_every_n_epochs=1, clip_skip=1, noise_offset=0.0, min_snr_gamma=5,
                         caption_dropout_rate=0.1, sample_prompts="/p/prompts.txt", sample_every_n_epochs=1,
                         sample_sampler="euler_a", save_precision="float", mixed_precision="bf16")
    args = to_train_args(config)
    back = from_train_args(args, cuda=True)
    assert to_train_args(back) == args
    assert back.origin("net_dim") == "loaded" and back.get("unet_lr") == 0.0


def test_reading_kohya_args_fills_sd_scripts_meanings():
    args, unknown = TrainArgs.from_mapping({"use_8bit_adam": True, "network_dim": None, "lr_warmup_steps": 100,
                                            "max_train_steps": 1000, "resolution": "512,512", "clip_skip": None,
                                            "network_module": "networks.lora", "network_args": ["conv_dim=4"]})
    config = from_train_args(args, cuda=True)
    assert unknown == []
    assert config.get("optimizer_type") == "AdamW8bit" and config.get("net_dim") == 4
    assert config.get("warmup_lr_ratio") == 0.1 and config.get("max_steps") == 1000
    assert config.get("train_resolution") == 512 and config.get("height_resolution") is None
    assert config.get("clip_skip") == 1 and config.get("max_clip_token_length") == 75
    assert (config.get("network_type"), config.get("conv_dim"), config.get("conv_alpha")) == ("LoCon", 4, 1.0)
    with pytest.raises(ConfigError, match="network module"):
        from_train_args(TrainArgs(network_module="networks.oft"), cuda=True)


def test_sample_intervals_of_zero_mean_no_samples_as_the_kohya_gui_writes_them():
    args = TrainArgs(pretrained_model_name_or_path="m.safetensors", train_data_dir="i", output_dir="o",
                     sample_every_n_steps=0, sample_every_n_epochs=0)
    validate_args(args)
    config = from_train_args(args, cuda=False)
    assert config.get("sample_every_n_steps") is None and config.get("sample_every_n_epochs") is None
    args.sample_every_n_steps = -1
    with pytest.raises(UserFacingError, match="sample_every_n_steps is -1; it must be at least 0"):
        validate_args(args)
