"""The ss_* and modelspec.* metadata: every sd-scripts key present, a string, JSON where nested, equal to its input."""

import hashlib
import json
import os

import pytest
import torch

from sd_scripts.args import TrainArgs
from sd_scripts.saving import TrainingRun, load_lora_file, model_file_metadata, save_lora, training_metadata
from sd_scripts.saving.metadata import MINIMUM_KEYS

# sd-scripts v0.6.4's keys, written for every training
V064_KEYS = {
    "ss_session_id", "ss_training_started_at", "ss_output_name", "ss_learning_rate", "ss_text_encoder_lr",
    "ss_unet_lr", "ss_num_train_images", "ss_num_reg_images", "ss_num_batches_per_epoch", "ss_num_epochs",
    "ss_gradient_checkpointing", "ss_gradient_accumulation_steps", "ss_max_train_steps", "ss_lr_warmup_steps",
    "ss_lr_scheduler", "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_mixed_precision",
    "ss_full_fp16", "ss_v2", "ss_clip_skip", "ss_max_token_length", "ss_cache_latents", "ss_seed", "ss_lowram",
    "ss_noise_offset", "ss_multires_noise_iterations", "ss_multires_noise_discount", "ss_training_comment",
    "ss_sd_scripts_commit_hash", "ss_optimizer", "ss_max_grad_norm", "ss_caption_dropout_rate",
    "ss_caption_dropout_every_n_epochs", "ss_caption_tag_dropout_rate", "ss_face_crop_aug_range",
    "ss_prior_loss_weight", "ss_min_snr_gamma", "ss_training_finished_at", "ss_steps", "ss_epoch",
}
# ...plus these in folder mode (no --dataset_config)
FOLDER_MODE_KEYS = {
    "ss_batch_size_per_device", "ss_total_batch_size", "ss_resolution", "ss_color_aug", "ss_flip_aug",
    "ss_random_crop", "ss_shuffle_caption", "ss_enable_bucket", "ss_bucket_no_upscale", "ss_min_bucket_reso",
    "ss_max_bucket_reso", "ss_keep_tokens", "ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_tag_frequency",
    "ss_bucket_info",
}
MODEL_FILE_KEYS = {"ss_sd_model_name", "ss_sd_model_hash", "ss_new_sd_model_hash", "ss_vae_name", "ss_vae_hash", "ss_new_vae_hash"}
LATER_KEYS = {
    "ss_network_args", "ss_base_model_version", "ss_num_validation_images", "ss_network_dropout",
    "ss_adaptive_noise_scale", "ss_zero_terminal_snr", "ss_scale_weight_norms", "ss_ip_noise_gamma",
    "ss_debiased_estimation", "ss_noise_offset_random_strength", "ss_ip_noise_gamma_random_strength", "ss_loss_type",
    "ss_fp8_base", "ss_fp8_base_unet",
    # today's sd-scripts (train_network.py, HEAD 48d368fa) also writes these for every training
    "ss_huber_schedule", "ss_huber_scale", "ss_huber_c", "ss_validation_seed", "ss_validation_split",
    "ss_max_validation_steps", "ss_validate_every_n_epochs", "ss_validate_every_n_steps", "ss_resize_interpolation",
}
JSON_KEYS = {"ss_network_args", "ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_tag_frequency", "ss_bucket_info"}

DATASET = {
    "ss_num_train_images": "40",
    "ss_num_reg_images": "0",
    "ss_num_batches_per_epoch": "20",
    "ss_dataset_dirs": json.dumps({"10_ohwx cat": {"n_repeats": 10, "img_count": 4}}),
    "ss_reg_dataset_dirs": json.dumps({}),
    "ss_tag_frequency": json.dumps({"10_ohwx cat": {"ohwx cat": 4, "sitting": 2}}),
    "ss_bucket_info": json.dumps({"buckets": {"0": {"resolution": [512, 512], "count": 40}}, "mean_img_ar_error": 0.0}),
}


def example_args(**changes) -> TrainArgs:
    values = dict(
        pretrained_model_name_or_path="/models/base.safetensors", output_name="ohwx_cat", learning_rate=1e-4,
        unet_lr=2e-4, text_encoder_lr=5e-5, network_dim=16, network_alpha=8.0,
        network_args=["conv_dim=8", "conv_alpha=4"], train_batch_size=2, gradient_accumulation_steps=3,
        resolution="512,768", clip_skip=2, seed=1234, noise_offset=0.05, min_snr_gamma=5.0,
        lr_scheduler="cosine_with_restarts", mixed_precision="bf16", cache_latents=True, flip_aug=True,
        enable_bucket=True, keep_tokens=1, training_comment="my first cat", metadata_author="Ann",
        metadata_description="A cat.", metadata_tags="cat,animal",
    )
    values.update(changes)
    return TrainArgs(**values)


def example_run(model_files: dict[str, str], version: str = "sd_v1") -> TrainingRun:
    return TrainingRun(
        session_id=123456789, started_at=1_700_000_000.5, base_model_version=version, num_epochs=5,
        max_train_steps=100, lr_warmup_steps=10, optimizer="torch.optim.adamw.AdamW(weight_decay=0.01)",
        model_files=model_files,
    )


@pytest.fixture
def model_files(tmp_path) -> dict[str, str]:
    model = tmp_path / "base.safetensors"
    model.write_bytes(os.urandom(1024 * 1024 + 70_000))
    vae = tmp_path / "vae.safetensors"
    vae.write_bytes(os.urandom(2_000_000))
    return model_file_metadata(model, vae)


def test_every_key_present_as_a_string_with_json_where_nested(model_files):
    metadata = training_metadata(example_args(), DATASET, example_run(model_files), steps=40, epoch=2, saved_at=1_700_000_500.0)
    ss_keys = {key for key in metadata if key.startswith("ss_")}
    assert ss_keys == V064_KEYS | FOLDER_MODE_KEYS | MODEL_FILE_KEYS | LATER_KEYS
    assert all(isinstance(value, str) for value in metadata.values())
    for key in JSON_KEYS:
        json.loads(metadata[key])


def test_dataset_config_runs_describe_their_datasets_in_ss_datasets(model_files):
    """With --dataset_config the batch size, resolution and augmentations live per dataset inside ss_datasets."""
    dataset = {key: DATASET[key] for key in ("ss_num_train_images", "ss_num_reg_images", "ss_num_batches_per_epoch")}
    dataset["ss_datasets"] = json.dumps([{"is_dreambooth": True, "batch_size_per_device": 2, "subsets": []}])
    dataset["ss_dataset_dirs"] = DATASET["ss_dataset_dirs"]
    dataset["ss_tag_frequency"] = DATASET["ss_tag_frequency"]
    args = example_args(dataset_config="datasets.toml", train_data_dir=None)
    metadata = training_metadata(args, dataset, example_run(model_files), steps=40, epoch=2, saved_at=1_700_000_500.0)
    ss_keys = {key for key in metadata if key.startswith("ss_")}
    assert ss_keys == V064_KEYS | MODEL_FILE_KEYS | LATER_KEYS | {"ss_datasets", "ss_dataset_dirs", "ss_tag_frequency"}
    assert json.loads(metadata["ss_datasets"])[0]["batch_size_per_device"] == 2


def test_values_match_the_inputs(model_files):
    metadata = training_metadata(example_args(), DATASET, example_run(model_files), steps=40, epoch=2, saved_at=1_700_000_500.0)
    expected = {
        "ss_session_id": "123456789", "ss_training_started_at": "1700000000.5", "ss_output_name": "ohwx_cat",
        "ss_learning_rate": "0.0001", "ss_text_encoder_lr": "5e-05", "ss_unet_lr": "0.0002", "ss_num_epochs": "5",
        "ss_max_train_steps": "100", "ss_lr_warmup_steps": "10", "ss_lr_scheduler": "cosine_with_restarts",
        "ss_network_module": "networks.lora", "ss_network_dim": "16", "ss_network_alpha": "8.0",
        "ss_mixed_precision": "bf16", "ss_full_fp16": "False", "ss_v2": "False", "ss_clip_skip": "2",
        "ss_max_token_length": "None", "ss_cache_latents": "True", "ss_seed": "1234", "ss_noise_offset": "0.05",
        "ss_min_snr_gamma": "5.0", "ss_training_comment": "my first cat", "ss_gradient_accumulation_steps": "3",
        "ss_optimizer": "torch.optim.adamw.AdamW(weight_decay=0.01)", "ss_batch_size_per_device": "2",
        "ss_total_batch_size": "6", "ss_resolution": "(512, 768)", "ss_flip_aug": "True", "ss_color_aug": "False",
        "ss_enable_bucket": "True", "ss_keep_tokens": "1", "ss_training_finished_at": "1700000500.0",
        "ss_steps": "40", "ss_epoch": "2", "ss_base_model_version": "sd_v1", "ss_sd_model_name": "base.safetensors",
        "ss_vae_name": "vae.safetensors",
    }
    assert {key: metadata[key] for key in expected} == expected
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "8", "conv_alpha": "4"}
    assert {key: metadata[key] for key in DATASET} == DATASET


def test_modelspec_keys_for_an_sd1_lora(model_files):
    metadata = training_metadata(example_args(), DATASET, example_run(model_files), steps=40, epoch=2, saved_at=1_700_000_500.0)
    modelspec = {key: value for key, value in metadata.items() if key.startswith("modelspec.")}
    date = modelspec.pop("modelspec.date")
    assert date.startswith("2023-11-1") and "." not in date  # sai_model_spec: isoformat of the whole seconds
    assert modelspec == {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.implementation_version": "sd-scripts/unknown",  # get_implementation_version's value without git
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": "ohwx_cat",
        "modelspec.resolution": "512x768",
        "modelspec.prediction_type": "epsilon",
        "modelspec.encoder_layer": "2",
        "modelspec.author": "Ann",
        "modelspec.description": "A cat.",
        "modelspec.tags": "cat,animal",
    }


@pytest.mark.parametrize(
    ("version", "architecture", "prediction", "resolution"),
    [
        ("sd_v2", "stable-diffusion-v2-512/lora", "epsilon", "512x512"),
        ("sd_v2_v", "stable-diffusion-v2-768-v/lora", "v", "768x768"),
    ],
)
def test_sd2_families(model_files, version, architecture, prediction, resolution):
    args = example_args(resolution=None, metadata_title="Cat v2", clip_skip=None)
    metadata = training_metadata(args, DATASET, example_run(model_files, version), steps=1, epoch=1, saved_at=1_700_000_500.0)
    assert metadata["ss_v2"] == "True"
    assert metadata["ss_base_model_version"] == version
    assert metadata["modelspec.architecture"] == architecture
    assert metadata["modelspec.prediction_type"] == prediction
    assert metadata["modelspec.resolution"] == resolution
    assert metadata["modelspec.title"] == "Cat v2"
    assert "modelspec.encoder_layer" not in metadata


def test_no_metadata_keeps_only_what_a_reader_needs(model_files):
    args = example_args(no_metadata=True, network_args=[], network_dim=None)
    metadata = training_metadata(args, DATASET, example_run(model_files), steps=40, epoch=2, saved_at=1_700_000_500.0)
    assert metadata == {  # no ss_network_args: sd-scripts writes it only `if args.network_args`
        "ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "8.0",
        "ss_v2": "False", "ss_base_model_version": "sd_v1",
    }
    assert set(metadata) == set(MINIMUM_KEYS) - {"ss_network_args"}


def test_sd_scripts_values_of_the_settings_this_trainer_fixes(model_files):
    """What train_network.py writes for an l2 run without validation (its argparse defaults), and cache_latents
    true when only the disk cache is asked for (train_util.verify_training_args turns cache_latents on)."""
    args = example_args(cache_latents=False, cache_latents_to_disk=True, network_args=[])
    metadata = training_metadata(args, DATASET, example_run(model_files), steps=40, epoch=2, saved_at=1_700_000_500.0)
    assert {key: metadata[key] for key in (
        "ss_cache_latents", "ss_loss_type", "ss_huber_schedule", "ss_huber_scale", "ss_huber_c",
        "ss_num_validation_images", "ss_validation_seed", "ss_validation_split", "ss_max_validation_steps",
        "ss_validate_every_n_epochs", "ss_validate_every_n_steps", "ss_resize_interpolation", "ss_lowram",
    )} == {
        "ss_cache_latents": "True", "ss_loss_type": "l2", "ss_huber_schedule": "snr", "ss_huber_scale": "1.0",
        "ss_huber_c": "0.1", "ss_num_validation_images": "0", "ss_validation_seed": "None",
        "ss_validation_split": "0.0", "ss_max_validation_steps": "None", "ss_validate_every_n_epochs": "None",
        "ss_validate_every_n_steps": "None", "ss_resize_interpolation": "None", "ss_lowram": "False",
    }
    assert "ss_network_args" not in metadata


def test_model_file_hashes_are_sd_scripts_hashes(tmp_path):
    data = os.urandom(1024 * 1024 + 70_000)
    model = tmp_path / "base.safetensors"
    model.write_bytes(data)
    assert model_file_metadata(model) == {
        "ss_sd_model_name": "base.safetensors",
        "ss_sd_model_hash": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8],
        "ss_new_sd_model_hash": hashlib.sha256(data).hexdigest(),
    }
    folder = tmp_path / "diffusers_model"
    folder.mkdir()
    assert model_file_metadata(folder) == {"ss_sd_model_name": "diffusers_model"}


def test_missing_dataset_keys_are_a_programming_error(model_files):
    incomplete = {key: value for key, value in DATASET.items() if key != "ss_tag_frequency"}
    with pytest.raises(ValueError, match="ss_tag_frequency"):
        training_metadata(example_args(), incomplete, example_run(model_files), steps=1, epoch=1, saved_at=0.0)


def test_metadata_reaches_the_file_with_the_hashes(model_files, tmp_path):
    metadata = training_metadata(example_args(), DATASET, example_run(model_files), steps=40, epoch=2, saved_at=1_700_000_500.0)
    state_dict = {"lora_unet_mid_block_attentions_0_proj_in.alpha": torch.tensor(8.0)}
    _, written = load_lora_file(save_lora(state_dict, tmp_path / "ohwx_cat.safetensors", metadata=metadata))
    assert {key: written[key] for key in metadata} == metadata
    assert set(written) - set(metadata) == {"sshs_model_hash", "sshs_legacy_hash"}
