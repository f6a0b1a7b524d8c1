"""Bad-input corpus, models (issue 13 item 1): not a checkpoint, cut short, another family than the settings say,
a LoRA or FLUX as the base model, a .ckpt whose pickle would run code, a diffusers folder missing a part.

Everything here is found from the files' headers (safetensors: 8-byte length, JSON header, data_offsets; PyTorch:
the zip's table of contents and its pickle's opcodes), before any model loads: the pre-flight report names it, and
the trainer refuses with the same sentence while its model loader is replaced by one that fails the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bad_input_builders import FLUX_KEYS, LORA_KEYS, SDXL_KEYS, fake_sd1_model, good_folder  # noqa: F401
from bad_input_builders import json_file, no_model_loading, snapshot, wizard_config, write_malicious_pickle
from bad_input_builders import trainer_refusal, write_safetensors
from sd_scripts.args import TrainArgs
from sd_scripts.errors import UserFacingError
from sd_scripts.models.checkpoint_header import check_model_files
from wizard.formats import settings_file
from wizard.preflight import preflight_report
from wizard.translate import to_train_args


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return good_folder(tmp_path / "images" / "10_mychar").parent


def refused(model: Path, images: Path, output: Path, **settings: object) -> str:
    """The pre-flight problem and the trainer's refusal for this base model: the same sentence, nothing written."""
    config = wizard_config(model, images, output, **settings)
    before = snapshot(model.parent, images)
    problem = preflight_report(config, read_gpu=lambda: None, check_torch=lambda: None).problem
    assert problem is not None
    assert trainer_refusal(to_train_args(config)) == problem
    assert not output.exists() and snapshot(model.parent, images) == before
    return problem


def test_random_bytes_named_safetensors(tmp_path, images, no_model_loading):
    model = tmp_path / "models" / "download.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"<html>404 Not Found</html>" * 10)
    assert refused(model, images, tmp_path / "out") == ("download.safetensors is damaged or incomplete (its header "
                                                        "cannot be read); download it again.")


def test_a_safetensors_file_cut_short(tmp_path, images, no_model_loading):
    model = fake_sd1_model(tmp_path / "models" / "half.safetensors")
    whole = model.read_bytes()
    model.write_bytes(whole[:-20])
    assert refused(model, images, tmp_path / "out") == (
        f"half.safetensors is incomplete ({len(whole) - 20:,} of its {len(whole):,} bytes); the download or copy was "
        "cut short, download it again.")


def test_a_ckpt_cut_short(tmp_path, images, no_model_loading):
    import torch

    model = tmp_path / "models" / "half.ckpt"
    model.parent.mkdir()
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.ones(4)}}, model)
    model.write_bytes(model.read_bytes()[:300])
    assert refused(model, images, tmp_path / "out") == ("half.ckpt is damaged or incomplete (it is not a whole "
                                                        "PyTorch checkpoint); download it again.")


def test_a_text_file_named_ckpt(tmp_path, images, no_model_loading):
    model = tmp_path / "models" / "notes.ckpt"
    model.parent.mkdir()
    model.write_text("not a model", encoding="utf-8")
    assert refused(model, images, tmp_path / "out") == ("notes.ckpt is not a PyTorch checkpoint; choose a "
                                                        ".safetensors or .ckpt Stable Diffusion model.")


def test_a_lora_given_as_the_base_model(tmp_path, images, no_model_loading):
    model = write_safetensors(tmp_path / "models" / "style.safetensors", LORA_KEYS)
    assert refused(model, images, tmp_path / "out") == ("This file is a LoRA, not a base model; choose a Stable "
                                                        "Diffusion checkpoint as the base model.")


def test_a_flux_file_where_the_settings_say_sd1(tmp_path, images, no_model_loading):
    model = write_safetensors(tmp_path / "models" / "flux.safetensors", FLUX_KEYS)
    assert refused(model, images, tmp_path / "out", sdxl=False, v2=False).startswith("This is a FLUX model, which "
                                                                                      "this trainer does not support")


def test_a_ckpt_whose_pickle_would_run_code(tmp_path, images, no_model_loading):
    marker = tmp_path / "marker.txt"
    model = write_malicious_pickle(tmp_path / "models" / "evil.ckpt", marker)
    assert refused(model, images, tmp_path / "out") == ("evil.ckpt contains code, not only weights, and was not "
                                                        "opened for your safety; use a .safetensors version of this "
                                                        "model instead.")
    assert not marker.exists()


def test_a_diffusers_folder_missing_its_vae_weights(tmp_path, images, no_model_loading):
    """Diffusers folders are the trainer's (sd-scripts takes them); the wizard's question asks for a file."""
    folder = tmp_path / "models" / "sd15"
    folder.mkdir(parents=True)
    json_file(folder / "model_index.json", {"_class_name": "StableDiffusionPipeline"})
    for part in ("unet", "vae", "text_encoder"):
        (folder / part).mkdir()
        json_file(folder / part / "config.json", {})
        if part != "vae":
            (folder / part / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    expected = (f"The diffusers model folder {folder} has no complete vae (a config.json and its weights); copy or "
                "download the whole model folder again.")
    with pytest.raises(UserFacingError) as caught:
        check_model_files(folder)
    assert caught.value.message == expected
    args = TrainArgs(pretrained_model_name_or_path=str(folder), train_data_dir=str(images),
                     output_dir=str(tmp_path / "out"), resolution="64", caption_extension=".txt")
    assert trainer_refusal(args) == expected and not (tmp_path / "out").exists()


def test_a_vae_that_does_not_exist(tmp_path, images, no_model_loading):
    model = fake_sd1_model(tmp_path / "models" / "base.safetensors")
    missing = tmp_path / "models" / "vae.safetensors"
    assert refused(model, images, tmp_path / "out", vae=str(missing)) == (
        f"The VAE {missing} does not exist; check the path and choose the VAE again.")


def test_sd1_settings_from_a_file_with_an_sdxl_model_are_refused_naming_both(tmp_path, images):
    """A saved SD 1.x settings file (sdxl false) with an SDXL model: its 512 px, trained parts and caching were meant
    for SD 1.x, so the wizard says so instead of training SDXL with them."""
    model = write_safetensors(tmp_path / "models" / "xl.safetensors", SDXL_KEYS)
    saved = json_file(tmp_path / "sd1.json", {"config_version": 1, "sdxl": False, "base_model": str(model),
                                              "img_folder": str(images), "output_folder": str(tmp_path / "out")})
    config, _notes = settings_file.load(saved)
    problem = preflight_report(config, read_gpu=lambda: None, check_torch=lambda: None).problem
    assert problem == ("The settings are for an SD 1.x/2.x (not SDXL) model, but xl.safetensors is an SDXL model; "
                       "choose a base model of the family the settings were made for, or other settings.")


def test_an_sdxl_file_with_the_default_settings_is_trained_as_sdxl(tmp_path, images):
    """The family comes from the file: settings left at their defaults follow it (and the report says which)."""
    model = write_safetensors(tmp_path / "models" / "xl.safetensors", SDXL_KEYS)
    assert check_model_files(model).is_sdxl
    result = preflight_report(wizard_config(model, images, tmp_path / "out"), read_gpu=lambda: None,
                              check_torch=lambda: None)
    assert result.can_start, result.problem
    assert result.model_family is not None and result.model_family.startswith("SDXL")
    assert "The base model file is SDXL" in result.text()


def test_the_trainer_command_line_names_a_lora_given_as_the_base_model(tmp_path, images, capsys,
                                                                       no_model_loading):
    from sd_scripts.train import main

    model = write_safetensors(tmp_path / "models" / "style.safetensors", LORA_KEYS)
    code = main(["--pretrained_model_name_or_path", str(model), "--train_data_dir", str(images), "--output_dir",
                 str(tmp_path / "out"), "--resolution", "64", "--caption_extension", ".txt"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Training failed: This file is a LoRA, not a base model" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
