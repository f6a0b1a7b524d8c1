"""Tiny models and files for the model-loading tests (SD1 from the demo, SD2 / SD2-v built here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from sd_scripts.demo import tiny_sd15_model
from sd_scripts.models import SD_V2, SD_V2_V, BaseModel, save_ldm_checkpoint
from sd_scripts.models.architecture import attention_heads
from sd_scripts.models.shipped_assets import component_config, config_folder
from sd_scripts.models.tokenizers import load_tokenizer



def tiny_sd2_model(v_parameterization: bool, seed: int = 1) -> BaseModel:
    """SD2's structure (OpenCLIP-style GELU text encoder, 64-wide heads) at the demo's tiny widths: detection must
    come from structure, since context 32 says nothing about the family."""
    version = SD_V2_V if v_parameterization else SD_V2
    channels = [32, 32, 64, 64]
    unet_config = component_config(version, "unet") | {
        "sample_size": 8,
        "block_out_channels": channels,
        "cross_attention_dim": 32,
        "attention_head_dim": [attention_heads(c) for c in channels],
        "use_linear_projection": False,
    }
    vae_config = component_config(version, "vae") | {"sample_size": 64, "block_out_channels": [32, 32, 32, 32]}
    text_config = component_config(version, "text_encoder") | {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": attention_heads(32),
        "projection_dim": 32,
    }
    torch.manual_seed(seed)
    return BaseModel(
        unet=UNet2DConditionModel.from_config(unet_config).eval(),
        vae=AutoencoderKL.from_config(vae_config).eval(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_config)).eval(),
        tokenizer=load_tokenizer(v2=True),
        version=version,
        v2=True,
        v_parameterization=v_parameterization,
        path="",
    )


def with_linear_projection(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """The same UNet with Linear proj_in/proj_out, as SD2's diffusers folders have it."""
    linear = UNet2DConditionModel.from_config({**unet.config, "use_linear_projection": True})
    weights = {
        key: tensor[:, :, 0, 0] if key.endswith(("proj_in.weight", "proj_out.weight")) else tensor
        for key, tensor in unet.state_dict().items()
    }
    linear.load_state_dict(weights)
    return linear.eval()


def save_diffusers_folder(model: BaseModel, folder: Path) -> Path:
    """The model as a diffusers folder, laid out as the family's published folders (SD2: Linear projections)."""
    scheduler_class = DDIMScheduler if model.v_parameterization else PNDMScheduler
    scheduler = scheduler_class.from_pretrained(config_folder(model.version), subfolder="scheduler")
    pipeline = StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=with_linear_projection(model.unet) if model.v2 else model.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def sd1_model() -> BaseModel:
    return tiny_sd15_model()


@pytest.fixture(scope="session")
def sd1_file(tmp_path_factory, sd1_model) -> Path:
    path = tmp_path_factory.mktemp("sd1") / "tiny_sd1.safetensors"
    save_ldm_checkpoint(sd1_model, path)
    return path


@pytest.fixture(scope="session")
def sd2_model() -> BaseModel:
    return tiny_sd2_model(v_parameterization=False)


@pytest.fixture(scope="session")
def sd2_file(tmp_path_factory, sd2_model) -> Path:
    path = tmp_path_factory.mktemp("sd2") / "tiny_sd2.safetensors"
    save_ldm_checkpoint(sd2_model, path)
    return path
