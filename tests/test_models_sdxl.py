"""SDXL base models: the tiny SDXL model as an SGM single file and a diffusers folder loads back identically, its
file has SGM's key names and shapes, v-prediction is read from the file where it says so (NoobAI's markers, the
modelspec metadata), what is not a trainable SDXL base is refused with one sentence, and a real-size SDXL key set
(built on the meta device, no weights) is recognised by the torch-free header reader with SDXL base's real configs."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sd_scripts.errors import UserFacingError
from sd_scripts.models import (SDXL, BaseModel, load_base_model, model_from_shipped_configs, read_model_family,
                               save_ldm_checkpoint)
from sd_scripts.models.architecture import text_encoder_config, unet_config
from sd_scripts.models.checkpoint_header import NOT_A_BASE_MODEL, family_from_keys
from sd_scripts.models.ldm_export import ldm_state_dict
from sd_scripts.models.shipped_assets import component_config

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def assert_same_weights(expected: BaseModel, loaded: BaseModel) -> None:
    for part in PARTS:
        want, got = getattr(expected, part).state_dict(), getattr(loaded, part).state_dict()
        assert want.keys() == got.keys(), part
        assert all(torch.equal(want[key], got[key]) for key in want), part


@pytest.mark.parametrize("form", ["single_file", "diffusers_folder"])
def test_tiny_sdxl_loads_back_identically_from_a_single_file_and_a_diffusers_folder(tiny_sdxl, tiny_sdxl_files, form):
    path = tiny_sdxl_files[0 if form == "single_file" else 1]
    family = read_model_family(path)
    assert (family.version, family.is_sdxl) == (SDXL, True)
    loaded = load_base_model(path)
    assert (loaded.version, loaded.is_sdxl, loaded.v2, loaded.v_parameterization, loaded.notes) == (SDXL, True, False, False, [])
    assert loaded.text_encoders == [loaded.text_encoder, loaded.text_encoder_2]
    assert_same_weights(tiny_sdxl, loaded)
    assert loaded.unet.config.addition_embed_type == "text_time" and loaded.unet.config.use_linear_projection
    assert loaded.vae.config.scaling_factor == 0.13025  # sd-scripts' SDXL latent scale (sdxl_model_util)
    # the second tokenizer pads with "!" (id 0) as sd-scripts sets it, the first with CLIP's end token
    assert (loaded.tokenizer_2.pad_token, loaded.tokenizer_2.pad_token_id) == ("!", 0)
    assert loaded.tokenizer.pad_token_id == loaded.tokenizer.eos_token_id == 49407


def test_the_single_file_has_sgm_names_and_shapes(tiny_sdxl, tiny_sdxl_files):
    tensors = load_file(str(tiny_sdxl_files[0]))
    width = tiny_sdxl.text_encoder_2.config.hidden_size
    projection = tiny_sdxl.text_encoder_2.config.projection_dim
    unet = tiny_sdxl.unet
    # names from SDXL base's sd_xl_base_1.0.safetensors layout (SGM): U-Net as in SD1 with label_emb, CLIP-L in
    # transformers layout, OpenCLIP-G in OpenCLIP layout with merged q/k/v and a [width, embedding] projection
    expected = {
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight": unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.weight,
        "model.diffusion_model.input_blocks.4.1.proj_in.weight": unet.down_blocks[1].attentions[0].proj_in.weight,
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.ff.net.2.weight": unet.down_blocks[2].attentions[1].transformer_blocks[9].ff.net[2].weight,
        "model.diffusion_model.middle_block.1.transformer_blocks.9.attn2.to_k.weight": unet.mid_block.attentions[0].transformer_blocks[9].attn2.to_k.weight,
        "model.diffusion_model.output_blocks.2.2.conv.weight": unet.up_blocks[0].upsamplers[0].conv.weight,
        "model.diffusion_model.output_blocks.8.0.skip_connection.weight": unet.up_blocks[2].resnets[2].conv_shortcut.weight,
        "model.diffusion_model.label_emb.0.0.weight": unet.add_embedding.linear_1.weight,
        "model.diffusion_model.label_emb.0.2.bias": unet.add_embedding.linear_2.bias,
        "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight":
            tiny_sdxl.text_encoder.encoder.layers[0].self_attn.q_proj.weight,
        "conditioner.embedders.1.model.token_embedding.weight": tiny_sdxl.text_encoder_2.text_model.embeddings.token_embedding.weight,
        "conditioner.embedders.1.model.ln_final.weight": tiny_sdxl.text_encoder_2.text_model.final_layer_norm.weight,
        "first_stage_model.encoder.down.0.block.0.conv1.weight": tiny_sdxl.vae.encoder.down_blocks[0].resnets[0].conv1.weight,
        "first_stage_model.decoder.up.3.block.0.conv1.weight": tiny_sdxl.vae.decoder.up_blocks[0].resnets[0].conv1.weight,
    }
    for key, weight in expected.items():
        assert torch.equal(tensors[key], weight), key
    assert tensors["model.diffusion_model.input_blocks.4.1.proj_in.weight"].ndim == 2  # SDXL stores Linear projections
    layer = tiny_sdxl.text_encoder_2.text_model.encoder.layers[1].self_attn
    in_proj = torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight])
    assert torch.equal(tensors["conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"], in_proj)
    text_projection = tensors["conditioner.embedders.1.model.text_projection"]
    assert text_projection.shape == (width, projection)
    assert torch.equal(text_projection, tiny_sdxl.text_encoder_2.text_projection.weight.T)
    assert not any(key.startswith("cond_stage_model.") for key in tensors)
    with safe_open(str(tiny_sdxl_files[0]), "pt") as handle:
        assert handle.metadata()["modelspec.architecture"] == "stable-diffusion-xl-v1-base"


def rewritten(source: Path, target: Path, extra: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    tensors = load_file(str(source))
    save_file(tensors | extra, str(target), metadata=metadata)
    return target


def test_a_noobai_style_file_is_v_prediction_whatever_the_user_answered(tiny_sdxl, tiny_sdxl_files, tmp_path):
    # NoobAI-XL v-pred carries empty `v_pred` and `ztsnr` tensors and no modelspec metadata
    noobai = rewritten(tiny_sdxl_files[0], tmp_path / "noobai.safetensors", {"v_pred": torch.zeros(0), "ztsnr": torch.zeros(0)})
    family = read_model_family(noobai)
    assert (family.version, family.v_prediction) == (SDXL, True)
    assert family.description == "SDXL (v-prediction, stated in the file)"
    loaded = load_base_model(noobai, v_parameterization=False)
    assert loaded.v_parameterization and loaded.version == SDXL
    assert loaded.notes == ["This model predicts velocity (v-prediction) although v_parameterization was not set: using v-prediction."]

    stated = rewritten(tiny_sdxl_files[0], tmp_path / "modelspec.safetensors", {}, {"modelspec.prediction_type": "v"})
    assert read_model_family(stated).v_prediction is True
    unstated = rewritten(tiny_sdxl_files[0], tmp_path / "plain.safetensors", {})
    assert read_model_family(unstated).v_prediction is None
    assert load_base_model(unstated, v_parameterization=True).v_parameterization  # the user's answer decides


def test_a_v_prediction_sdxl_model_is_written_so_that_it_says_so(tiny_sdxl, tmp_path):
    save_ldm_checkpoint(dataclasses.replace(tiny_sdxl, v_parameterization=True), tmp_path / "v.safetensors")
    with safe_open(str(tmp_path / "v.safetensors"), "pt") as handle:
        assert "v_pred" in handle.keys() and handle.metadata()["modelspec.prediction_type"] == "v"
    assert load_base_model(tmp_path / "v.safetensors").v_parameterization


def test_a_ckpt_loads_as_sdxl_and_its_header_says_it_cannot_tell_before(tiny_sdxl, tiny_sdxl_files, tmp_path):
    ckpt = tmp_path / "tiny_sdxl.ckpt"
    torch.save({"state_dict": load_file(str(tiny_sdxl_files[0]))}, ckpt)
    assert read_model_family(ckpt).version is None
    assert_same_weights(tiny_sdxl, load_base_model(ckpt))


def header_only_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A safetensors header for these shapes, without the data: all the torch-free reader looks at."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = 2 * int(torch.Size(shape).numel())
        header[key] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode("utf-8")
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded)
    return path


@pytest.mark.parametrize(
    ("what", "keys"),
    [
        ("refiner", ["model.diffusion_model.input_blocks.0.0.weight", "conditioner.embedders.0.model.text_projection",
                     "conditioner.embedders.0.model.transformer.resblocks.0.ln_1.weight"]),
        ("lora", ["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight",
                  "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"]),
        ("flux", ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"]),
        ("sd3", ["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"]),
        ("other", ["first_stage_model.encoder.conv_in.weight"]),
    ],
)
def test_what_is_not_a_trainable_base_model_is_refused_with_its_sentence(what, keys, tmp_path):
    path = header_only_file(tmp_path / f"{what}.safetensors", {key: (4, 4) for key in keys})
    with pytest.raises(UserFacingError) as refused:
        read_model_family(path)
    assert str(refused.value) == NOT_A_BASE_MODEL[what]


def test_an_sdxl_refiner_folder_is_refused(tiny_sdxl_files, tmp_path):
    folder = tmp_path / "refiner"
    shutil.copytree(tiny_sdxl_files[1], folder, ignore=shutil.ignore_patterns("text_encoder", "tokenizer"))
    index = json.loads((folder / "model_index.json").read_text())
    index |= {"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None], "tokenizer": [None, None]}
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UserFacingError, match="SDXL refiner"):
        load_base_model(folder)


def real_size_sdxl_shapes() -> dict[str, tuple[int, ...]]:
    """SDXL base's tensor names and shapes, from modules built on the meta device from its real configs."""
    with init_empty_weights():
        model = model_from_shipped_configs(SDXL)
    return {key: tuple(tensor.shape) for key, tensor in ldm_state_dict(model).items()}


def test_a_real_size_sdxl_key_set_is_recognised_as_sdxl_base_with_its_real_configs(tmp_path):
    shapes = real_size_sdxl_shapes()
    # shapes SDXL base's file has (sd_xl_base_1.0.safetensors), written out from the format
    assert shapes["model.diffusion_model.input_blocks.4.1.proj_in.weight"] == (640, 640)
    assert shapes["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert shapes["model.diffusion_model.middle_block.1.transformer_blocks.9.attn2.to_k.weight"] == (1280, 2048)
    assert shapes["model.diffusion_model.output_blocks.8.0.skip_connection.weight"] == (320, 640, 1, 1)
    assert shapes["conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc1.weight"] == (3072, 768)
    assert shapes["conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight"] == (3840, 1280)
    assert shapes["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
    assert shapes["first_stage_model.decoder.up.0.block.0.conv1.weight"] == (128, 256, 3, 3)

    family = read_model_family(header_only_file(tmp_path / "sd_xl_base_1.0.safetensors", shapes))
    assert (family.version, family.v_prediction) == (SDXL, None)
    assert family_from_keys(shapes).version == SDXL
    # the loader's configs from these shapes are SDXL base's own
    real_unet = component_config(SDXL, "unet")
    derived = unet_config(shapes, SDXL)
    for field in ("block_out_channels", "attention_head_dim", "transformer_layers_per_block", "cross_attention_dim",
                  "projection_class_embeddings_input_dim", "down_block_types", "up_block_types", "use_linear_projection"):
        assert derived[field] == real_unet[field], field
    for second, component in ((False, "text_encoder"), (True, "text_encoder_2")):
        assert text_encoder_config(shapes, SDXL, second=second) == component_config(SDXL, component)


def test_the_header_reader_needs_no_torch(tiny_sdxl_files):
    code = (
        "import sys; from sd_scripts.models.checkpoint_header import read_model_family;"
        f"print(read_model_family({str(tiny_sdxl_files[0])!r}).version,"
        " [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == [SDXL, "[]"], result.stderr
