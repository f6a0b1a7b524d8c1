"""load_base_model / save_ldm_checkpoint / detect_model_version on tiny SD1, SD2 and SD2-v files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from sd_scripts.errors import UserFacingError
from sd_scripts.models import SD_V1, SD_V2, SD_V2_V, detect_model_version, load_base_model, save_ldm_checkpoint
from sd_scripts.models.ldm_export import ldm_state_dict
from sd_scripts.models.ldm_layout import UNET_PREFIX, VAE_PREFIX, vae_to_ldm

from test_models_fixtures import save_diffusers_folder, sd1_file, sd1_model, sd2_file, sd2_model, tiny_sd2_model  # noqa: F401

PARTS = ("unet", "vae", "text_encoder")


def assert_same_weights(expected, actual) -> None:
    """Every tensor of every part equal; SD2 folders hold proj_in/proj_out as Linear, our UNet as 1x1 conv."""
    for part in PARTS:
        want, got = getattr(expected, part).state_dict(), getattr(actual, part).state_dict()
        assert set(want) == set(got), part
        for key in want:
            assert torch.equal(want[key], got[key].reshape(want[key].shape)), f"{part}.{key}"


def assert_one_sentence(error: pytest.ExceptionInfo) -> None:
    message = str(error.value)
    assert isinstance(error.value, UserFacingError)
    assert "\n" not in message and message.endswith(".") and len(message) < 220, message


def test_loaded_model_holds_exactly_the_tensors_of_the_file(sd1_file):
    file_tensors = load_file(sd1_file)
    model = load_base_model(sd1_file)
    assert (model.version, model.v2, model.v_parameterization, model.notes) == (SD_V1, False, False, [])
    exported = ldm_state_dict(model)
    assert set(exported) == set(file_tensors)
    for key, tensor in file_tensors.items():
        assert torch.equal(exported[key], tensor), key
    assert model.tokenizer.pad_token_id == 49407
    assert model.unet.down_blocks[0].attentions[0].proj_in.weight.shape == (32, 32, 1, 1)  # kohya: 1x1 conv


@pytest.mark.parametrize("version", [SD_V1, SD_V2, SD_V2_V])
def test_single_file_round_trip_agrees_with_diffusers(tmp_path, version):
    from sd_scripts.demo import tiny_sd15_model

    original = tiny_sd15_model() if version == SD_V1 else tiny_sd2_model(v_parameterization=version == SD_V2_V)
    path = tmp_path / "model.safetensors"
    save_ldm_checkpoint(original, path)
    folder = save_diffusers_folder(original, tmp_path / "diffusers")

    ours = load_base_model(path)
    theirs = StableDiffusionPipeline.from_single_file(str(path), config=str(folder), local_files_only=True)
    from_folder = load_base_model(folder)

    assert ours.version == from_folder.version == version
    assert_same_weights(original, ours)
    assert_same_weights(original, theirs)
    assert_same_weights(original, from_folder)


def test_sd2_single_file_keeps_1x1_conv_projections_and_drops_the_last_text_layer(sd2_file):
    file_tensors = load_file(sd2_file)
    assert file_tensors[f"{UNET_PREFIX}input_blocks.1.1.proj_in.weight"].ndim == 2  # SD2 files store Linear
    assert "cond_stage_model.model.transformer.resblocks.3.ln_1.weight" in file_tensors  # 4 OpenCLIP layers in the file
    model = load_base_model(sd2_file)
    assert model.unet.down_blocks[0].attentions[0].proj_in.weight.ndim == 4
    assert model.text_encoder.config.num_hidden_layers == 3
    assert model.text_encoder.config.hidden_act == "gelu"
    assert model.tokenizer.pad_token_id == 0


def test_family_is_detected_from_structure_and_stated_prediction(sd1_file, sd2_file):
    sd1 = {k: t.shape for k, t in load_file(sd1_file).items()}
    sd2 = {k: t.shape for k, t in load_file(sd2_file).items()}
    assert detect_model_version(sd1) == SD_V1
    assert detect_model_version(sd2) == SD_V2
    assert detect_model_version(sd2, {"modelspec.architecture": "stable-diffusion-v2-768-v"}) == SD_V2_V
    assert detect_model_version(sd2, {"modelspec.prediction_type": "v"}) == SD_V2_V
    assert detect_model_version({**sd2, "v_pred": ()}) == SD_V2_V


@pytest.mark.parametrize(("bias", "expected"), [(-2.0, SD_V2_V), (0.5, SD_V2)])
def test_sd2_file_that_states_nothing_is_probed_with_one_unet_forward(tmp_path, sd2_model, bias, expected):
    """A UNet whose output is the constant `bias`: -2 - 0.5 < -1 reads as v-prediction, 0.5 - 0.5 as epsilon."""
    tensors = ldm_state_dict(sd2_model)
    tensors[f"{UNET_PREFIX}out.2.weight"] = torch.zeros_like(tensors[f"{UNET_PREFIX}out.2.weight"])
    tensors[f"{UNET_PREFIX}out.2.bias"] = torch.full_like(tensors[f"{UNET_PREFIX}out.2.bias"], bias)
    path = tmp_path / "no_metadata.safetensors"
    save_file(tensors, path)
    model = load_base_model(path)
    assert model.version == expected
    assert model.v_parameterization == (expected == SD_V2_V)


def test_user_answers_that_disagree_with_the_file_are_overruled_with_a_note(sd1_file, sd2_file):
    sd2 = load_base_model(sd2_file, v2=False, v_parameterization=True)
    assert (sd2.v2, sd2.v_parameterization, sd2.version) == (True, False, SD_V2)
    assert sd2.notes == [
        "This file is an SD2 model although v2 was not set: using v2.",
        "This model predicts noise (epsilon), so v_parameterization was turned off.",
    ]
    sd1 = load_base_model(sd1_file, v2=True)
    assert sd1.notes == ["This file is an SD1 model although v2 was set: training it as SD1."]
    assert load_base_model(sd1_file, v2=False, v_parameterization=False).notes == []


def test_ckpt_files_load_with_the_state_dict_nested_or_at_top_level(tmp_path, sd1_file, sd1_model):
    tensors = load_file(sd1_file)
    torch.save({"state_dict": tensors, "global_step": 1000}, tmp_path / "nested.ckpt")
    torch.save(tensors, tmp_path / "flat.ckpt")
    for name in ("nested.ckpt", "flat.ckpt"):
        assert_same_weights(sd1_model, load_base_model(tmp_path / name))


class RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_ckpt_that_would_run_code_is_refused_and_never_runs(tmp_path, sd1_file):
    marker = tmp_path / "code_ran"
    # the payload is real: plain unpickling runs it
    assert pickle.loads(pickle.dumps(RunsACommand(tmp_path / "probe"))) == 0 and (tmp_path / "probe").exists()
    torch.save({"state_dict": load_file(sd1_file), "payload": RunsACommand(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(UserFacingError) as error:
        load_base_model(tmp_path / "evil.ckpt")
    assert_one_sentence(error)
    assert "contains code" in str(error.value)
    assert not marker.exists()


def test_bad_inputs_get_one_sentence_errors(tmp_path, sd1_file, sd1_model):
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32, 1, 1)}, lora)
    random_file = tmp_path / "random.safetensors"
    save_file({"weight": torch.zeros(3)}, random_file)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(sd1_file.read_bytes()[: sd1_file.stat().st_size // 2])
    sdxl = tmp_path / "sdxl.safetensors"
    save_file({f"{UNET_PREFIX}input_blocks.0.0.weight": torch.zeros(1), "conditioner.embedders.0.x": torch.zeros(1)}, sdxl)
    no_index = tmp_path / "not_diffusers"
    no_index.mkdir()
    incomplete = save_diffusers_folder(sd1_model, tmp_path / "incomplete")
    (incomplete / "vae" / "config.json").unlink()
    no_weights = save_diffusers_folder(sd1_model, tmp_path / "no_weights")
    (no_weights / "unet" / "diffusion_pytorch_model.safetensors").unlink()

    cases = {
        tmp_path / "missing.safetensors": "does not exist",
        lora: "is a LoRA",
        random_file: "not a Stable Diffusion",
        truncated: "damaged or incomplete",
        sdxl: "SDXL",
        no_index: "no model_index.json",
        incomplete: "no complete 'vae' part",
        no_weights: "missing weight files",
    }
    for path, words in cases.items():
        with pytest.raises(UserFacingError) as error:
            load_base_model(path)
        assert_one_sentence(error)
        assert words in str(error.value), (path, str(error.value))


def test_vae_option_replaces_the_vae_from_ldm_or_diffusers_files_and_folders(tmp_path, sd1_file):
    other = tiny_sd2_model(v_parameterization=False, seed=7).vae
    ldm = tmp_path / "vae_ldm.safetensors"
    save_file(vae_to_ldm(other.state_dict(), 4, prefix=""), ldm)
    prefixed = tmp_path / "vae_prefixed.ckpt"
    torch.save({"state_dict": vae_to_ldm(other.state_dict(), 4, prefix=VAE_PREFIX)}, prefixed)
    diffusers_file = tmp_path / "vae_diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, diffusers_file)
    folder = tmp_path / "vae_folder"
    other.save_pretrained(folder)

    for source in (ldm, prefixed, diffusers_file, folder):
        model = load_base_model(sd1_file, vae=source)
        for key, tensor in other.state_dict().items():
            assert torch.equal(model.vae.state_dict()[key], tensor), (source, key)
    with pytest.raises(UserFacingError) as error:
        load_base_model(sd1_file, vae=sd1_file.with_name("nope.safetensors"))
    assert_one_sentence(error)


def test_save_never_overwrites_without_being_told(tmp_path, sd1_model):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"the user's file")
    with pytest.raises(UserFacingError):
        save_ldm_checkpoint(sd1_model, path)
    assert path.read_bytes() == b"the user's file"
    save_ldm_checkpoint(sd1_model, path, overwrite=True)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left behind


@pytest.mark.parametrize("version", [SD_V1, SD_V2])
def test_real_size_shapes_give_back_the_shipped_configs(version):
    """Full-size SD1.5 / SD2 modules built without memory (meta tensors), named as in real files."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sd_scripts.models.architecture import text_encoder_config, unet_config, vae_config
    from sd_scripts.models.ldm_layout import sd1_text_encoder_to_ldm, sd2_text_encoder_to_ldm, unet_to_ldm
    from sd_scripts.models.shipped_assets import component_config

    shipped = {part: component_config(version, part) for part in PARTS}
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(shipped["unet"])
        vae = AutoencoderKL.from_config(shipped["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**shipped["text_encoder"]))
    layers = shipped["text_encoder"]["num_hidden_layers"]
    tensors = unet_to_ldm(unet.state_dict(), unet.config, linear_projection=version != SD_V1)
    tensors.update(vae_to_ldm(vae.state_dict(), 4))
    text = text_encoder.state_dict()
    tensors.update(sd2_text_encoder_to_ldm(text, layers) if version != SD_V1 else sd1_text_encoder_to_ldm(text))
    shapes = {key: tuple(t.shape) for key, t in tensors.items()}

    inferred_unet = unet_config(shapes, version)
    for name in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "cross_attention_dim",
                 "attention_head_dim", "in_channels", "out_channels"):
        assert inferred_unet[name] == shipped["unet"][name], name
    assert vae_config(shapes) == shipped["vae"]
    assert text_encoder_config(shapes, version) == shipped["text_encoder"]
    assert detect_model_version(shapes) == version
