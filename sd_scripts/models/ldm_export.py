"""Writing a BaseModel as an SD single-file LDM/SGM `.safetensors`, the layout A1111, ComfyUI and sd-scripts load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from sd_scripts.errors import UserFacingError
from sd_scripts.models.base_model import SD_V1, SD_V2, SD_V2_V, SDXL, BaseModel
from sd_scripts.models.ldm_layout import (
    SDXL_TEXT_PREFIX,
    sd1_text_encoder_to_ldm,
    sd2_text_encoder_to_ldm,
    sdxl_text_encoder_2_to_ldm,
    unet_to_ldm,
    vae_to_ldm,
)

MODELSPEC_ARCHITECTURES = {
    SD_V1: "stable-diffusion-v1",
    SD_V2: "stable-diffusion-v2-512",
    SD_V2_V: "stable-diffusion-v2-768-v",
    SDXL: "stable-diffusion-xl-v1-base",
}


def ldm_state_dict(model: BaseModel) -> dict:
    """All tensors of the model under their LDM names (`model.diffusion_model.`, `first_stage_model.`,
    `cond_stage_model.transformer.text_model.` for SD1, `cond_stage_model.model.` for SD2, and
    `conditioner.embedders.0.transformer.text_model.` + `conditioner.embedders.1.model.` for SDXL).

    An SDXL v-prediction model also gets ComfyUI's empty `v_pred` marker, as NoobAI's files have, so that tools which
    do not read the metadata see it too."""
    tensors = unet_to_ldm(model.unet.state_dict(), model.unet.config, linear_projection=model.v2 or model.is_sdxl)
    tensors.update(vae_to_ldm(model.vae.state_dict(), len(model.vae.config.block_out_channels)))
    text_state = model.text_encoder.state_dict()
    if model.is_sdxl:
        tensors.update(sd1_text_encoder_to_ldm(text_state, prefix=SDXL_TEXT_PREFIX))
        second = model.text_encoder_2
        tensors.update(sdxl_text_encoder_2_to_ldm(second.state_dict(), second.config.num_hidden_layers))
        if model.v_parameterization:
            tensors["v_pred"] = torch.zeros(0)
    elif model.v2:
        tensors.update(sd2_text_encoder_to_ldm(text_state, model.text_encoder.config.num_hidden_layers))
    else:
        tensors.update(sd1_text_encoder_to_ldm(text_state))
    return tensors


def save_ldm_checkpoint(model: BaseModel, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write atomically (temporary file, then rename), readable by everyone (0644); an existing file is only replaced
    when `overwrite` is set. The metadata states the family and prediction type, so the file describes itself."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserFacingError(f"{path} already exists; choose another file name for the model.")
    metadata = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": MODELSPEC_ARCHITECTURES[model.version],
        "modelspec.implementation": "diffusers",
        "modelspec.prediction_type": "v" if model.v_parameterization else "epsilon",
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(ldm_state_dict(model), str(temporary), metadata=metadata)
        sort_metadata_in_place(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def sort_metadata_in_place(path: Path) -> None:
    """safetensors writes metadata in hash-map order, which changes from run to run; sorting it makes the same
    model give the same bytes (the demo relies on it). The header keeps its length, so it is rewritten in place."""
    with open(path, "r+b") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(encoded) > length:
            raise RuntimeError("re-encoding the safetensors header changed its length")
        handle.seek(8)
        handle.write(encoded.ljust(length, b" "))
