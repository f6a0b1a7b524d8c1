"""The wizard with SDXL models: the family is read from the file and only what it leaves open is asked.

Scripted walks of the training questions with header-only model files (`write_model_header`: the tensor names that
say SD 1.x or SDXL, and NoobAI's v_pred / ztsnr markers), showing exactly which model questions each file gets, the
defaults that follow SDXL (1024 px and the buckets that follow it, U-Net only with cached text-encoder outputs,
gradient checkpointing, the VAE in fp32 for fp16 runs) and the settings files that say SDXL. Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import questions
from test_graph_fixtures import Project, make_project, write_model_header
from wizard.askers.scripted import ScriptedAsker
from wizard.config import FIELD_BY_NAME, ConfigError, TrainConfig
from wizard.formats import kohya_gui, seed_json
from wizard.graph import walk
from wizard.translate import to_train_args

TRAIN = questions.FLOWS["train"]
MODEL_QUESTIONS = {question.id for question in questions.model.QUESTIONS}
SDXL_ONLY_QUESTIONS = {"zero_terminal_snr", "sdxl_vae", "sdxl_vae_file"}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)


def walk_with(project: Project, model: Path, cuda: bool = False, **answers) -> tuple[TrainConfig, ScriptedAsker]:
    config = TrainConfig(cuda=cuda)
    asker = ScriptedAsker({**project.path_answers(), "base_model": str(model), **answers})
    assert walk(TRAIN, config, asker) == "done"
    return config, asker


def model_questions(asker: ScriptedAsker) -> list[str]:
    return [name for name in asker.asked if name in MODEL_QUESTIONS | SDXL_ONLY_QUESTIONS]


def test_an_sd1_file_is_asked_only_whether_it_is_realistic(project: Project):
    model = write_model_header(project.base_model.with_name("sd15.safetensors"), "sd1")
    config, asker = walk_with(project, model)
    assert model_questions(asker) == ["realistic"]
    assert asker.texts["realistic"].startswith("The base model file is SD 1.x")
    assert (config.get("sdxl"), config.get("v2"), config.get("train_resolution")) == (False, False, 512)
    assert config.get("unet_only") is False and config.get("cache_text_encoder_outputs") is False


def test_an_sdxl_file_that_states_epsilon_asks_no_model_question(project: Project):
    model = write_model_header(project.base_model.with_name("xl.safetensors"), "sdxl",
                               metadata={"modelspec.prediction_type": "epsilon"})
    config, asker = walk_with(project, model)
    assert model_questions(asker) == []  # no v2, no v-prediction, no clip skip for SDXL
    assert config.get("sdxl") and not config.get("v2") and not config.get("v_parameterization")
    assert "noise prediction (epsilon), stated in the file" in config.adjusted_default("sdxl")
    # sd-scripts' docs/train_SDXL-en.md: 1024x1024; the buckets follow the resolution (320-960 at 512 -> x2)
    assert config.get("train_resolution") == 1024
    assert (config.get("min_bucket_resolution"), config.get("max_bucket_resolution")) == (640, 1920)
    # its 8 GB advice: U-Net only, cached text-encoder outputs, gradient checkpointing (no GPU known here)
    assert config.get("unet_only") and config.get("cache_text_encoder_outputs") and config.get("gradient_checkpointing")
    args = to_train_args(config)
    assert args.network_train_unet_only and args.cache_text_encoder_outputs and args.gradient_checkpointing
    assert args.resolution == "1024" and args.clip_skip is None and not args.zero_terminal_snr


def test_a_noobai_style_v_prediction_file_is_asked_only_about_zero_terminal_snr(project: Project):
    model = write_model_header(project.base_model.with_name("noob_vpred.safetensors"), "sdxl", v_pred_key=True)
    config, asker = walk_with(project, model)
    assert model_questions(asker) == ["zero_terminal_snr"]
    assert asker.texts["zero_terminal_snr"].startswith("The base model file is SDXL (v-prediction, stated in the file)")
    assert asker.defaults["zero_terminal_snr"] is True
    args = to_train_args(config)
    assert args.v_parameterization and args.zero_terminal_snr and not args.v2


def test_an_sdxl_file_that_does_not_say_asks_v_prediction_then_zero_terminal_snr(project: Project):
    model = write_model_header(project.base_model.with_name("xl.safetensors"), "sdxl")
    config, asker = walk_with(project, model, v_parameterization=True, zero_terminal_snr=False)
    assert model_questions(asker) == ["v_parameterization", "zero_terminal_snr"]
    assert "SDXL (the file does not say" in asker.texts["v_parameterization"]
    assert config.get("v_parameterization") and not config.get("zero_terminal_snr")

    config, asker = walk_with(project, model)  # answered no: eps, and no zero-terminal-SNR question
    assert model_questions(asker) == ["v_parameterization"] and not config.get("zero_terminal_snr")


def test_fp16_on_sdxl_asks_for_the_vae_and_keeps_it_in_fp32_by_default(project: Project, tmp_path: Path):
    model = write_model_header(project.base_model.with_name("xl.safetensors"), "sdxl")
    config, asker = walk_with(project, model, cuda=True, mixed_precision="fp16")
    assert "sdxl_vae" in asker.asked and "sdxl_vae_file" not in asker.asked
    assert config.get("no_half_vae") and to_train_args(config).no_half_vae

    fixed = tmp_path / "sdxl.vae.safetensors"
    fixed.write_bytes(b"vae")
    config, asker = walk_with(project, model, cuda=True, mixed_precision="fp16",
                              sdxl_vae="use an fp16-fix VAE file", sdxl_vae_file=str(fixed))
    assert config.get("vae") == str(fixed) and not config.get("no_half_vae")

    config, asker = walk_with(project, model, cuda=True, mixed_precision="bf16")
    assert "sdxl_vae" not in asker.asked and not config.get("no_half_vae")


def test_captions_that_change_every_step_turn_text_encoder_caching_off(project: Project):
    model = write_model_header(project.base_model.with_name("xl.safetensors"), "sdxl")
    config, _ = walk_with(project, model, shuffle_captions=True)
    assert config.get("unet_only") and not config.get("cache_text_encoder_outputs")
    to_train_args(config)  # and the trainer's caching rules accept the result


def test_a_lora_or_a_refiner_is_refused_as_base_model_in_one_sentence(project: Project):
    lora = project.base_model.with_name("lora.safetensors")
    save_file({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": np.zeros(1, np.float16)}, str(lora))
    refiner = project.base_model.with_name("refiner.safetensors")
    save_file({"model.diffusion_model.input_blocks.0.0.weight": np.zeros(1, np.float16),
               "conditioner.embedders.0.model.text_projection": np.zeros(1, np.float16)}, str(refiner))
    _, asker = walk_with(project, project.base_model, base_model=[str(lora), str(refiner), str(project.base_model)])
    (lora_error, refiner_error) = [error for question, error in asker.errors if question == "base_model"]
    assert lora_error.startswith("This file is a LoRA") and refiner_error.startswith("This is an SDXL refiner")


def test_a_settings_file_that_says_sdxl_for_an_sd1_file_is_refused_before_loading(project: Project):
    sd1 = write_model_header(project.base_model.with_name("sd15.safetensors"), "sd1")
    saved = project.json_folder / "xl.json"
    saved.write_text(json.dumps({"config_version": 1, "base_model": str(sd1), "sdxl": True,
                                 "img_folder": str(project.img_folder),
                                 "output_folder": str(project.output_folder)}), encoding="utf-8")
    config, _ = seed_json.load(saved, into=TrainConfig(cuda=False))
    with pytest.raises(ConfigError, match=r"^The settings are for an SDXL model, but sd15.safetensors is an SD 1.x "):
        to_train_args(config)

    # the Kohya_ss GUI's sdxl check box says the same
    gui = project.json_folder / "gui.json"
    gui.write_text(json.dumps({"pretrained_model_name_or_path": str(sd1), "sdxl": True, "LoRA_type": "Standard",
                               "sdxl_cache_text_encoder_outputs": True, "sdxl_no_half_vae": True}), encoding="utf-8")
    config, _ = kohya_gui.load(gui, TrainConfig(cuda=False))
    assert config.origin("sdxl") == "loaded" and config.get("no_half_vae")
    with pytest.raises(ConfigError, match="is an SD 1.x model"):
        to_train_args(config)

    # choosing the base model again lets the new file decide
    choosing = TrainConfig(cuda=False)
    choosing.set("json_load_skip_list", ["base_model"])
    config, _ = seed_json.load(saved, into=choosing)
    xl = write_model_header(project.base_model.with_name("xl.safetensors"), "sdxl")
    asker = ScriptedAsker({"base_model": str(xl)})
    walk(TRAIN, config, asker)
    assert config.get("sdxl") and to_train_args(config).resolution == "1024"


def test_the_new_settings_are_declared_once_in_sd_scripts_terms():
    for name in ("zero_terminal_snr", "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk",
                 "no_half_vae"):
        assert (FIELD_BY_NAME[name].type, FIELD_BY_NAME[name].default) == (bool, False)
    for name in ("zero_terminal_snr", "cache_text_encoder_outputs", "no_half_vae"):
        assert f"sd-scripts' --{name}" in FIELD_BY_NAME[name].help


def test_block_weights_ask_sdxl_s_counts_of_values(project: Project):
    # sd-scripts' SDXL blocks: base, 9 input, 3 middle, 9 output, out (23)
    model = write_model_header(project.base_model.with_name("xl.safetensors"), "sdxl")
    twelve = ",".join(["1"] * 12)
    config, asker = walk_with(project, model, block_weights=True, down_lr_weight=[twelve, "sine"], mid_lr_weight=0.5,
                              use_block_dims=True)
    assert dict(asker.errors)["down_lr_weight"].startswith("Type 9 numbers from 0 to 1")
    assert asker.defaults["up_lr_weight"] == ",".join(["1"] * 9)
    assert asker.texts["down_lr_weight"].startswith("Weights of the 9 input blocks")
    assert asker.texts["block_dims"] == "Dims of the 23 blocks (base, 9 input, 3 middle, 9 output, out)?"
    assert len(config.get("block_dims").split(",")) == 23
    assert "mid_lr_weight=0.5,0.5,0.5" in to_train_args(config).network_args
