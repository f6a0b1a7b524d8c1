"""Shared helpers for the question-graph, queue and command-line tests: a tiny project on disk and its answers.

The paths only have to exist for the questions' checks; nothing here trains, so the model file is a stub. Where the
family matters, `write_model_header` writes a header-only model file: the key names that say SD 1.x or SDXL (as the
single-file LDM/SGM layout names them) with one-number tensors, and the v-prediction markers NoobAI's files carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

# Tensor names of the single-file layouts that tell the families apart.
FAMILY_KEYS = {
    "sd1": ("model.diffusion_model.input_blocks.0.0.weight",
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"),
    "sd2": ("model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.model.token_embedding.weight"),
    "sdxl": ("model.diffusion_model.input_blocks.0.0.weight",
             "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
             "conditioner.embedders.1.model.text_projection"),
}


def write_model_header(path: Path, family: str, *, v_pred_key: bool = False,
                       metadata: dict[str, str] | None = None) -> Path:
    """A .safetensors file whose header reads as `family`; `v_pred_key` adds the v_pred and ztsnr keys of NoobAI's
    v-prediction files."""
    names = FAMILY_KEYS[family] + (("v_pred", "ztsnr") if v_pred_key else ())
    save_file({name: np.zeros(1, dtype=np.float16) for name in names}, str(path), metadata=metadata)
    return path


@dataclass
class Project:
    base_model: Path
    img_folder: Path
    reg_folder: Path
    output_folder: Path
    prompts: Path
    json_folder: Path

    def path_answers(self) -> dict[str, Any]:
        """The answers every training walk needs: the three required paths."""
        return {"base_model": str(self.base_model), "img_folder": str(self.img_folder),
                "output_folder": str(self.output_folder)}


def make_project(root: Path) -> Project:
    base_model = root / "model.safetensors"
    base_model.write_bytes(b"stub")
    img_folder = root / "images"
    (img_folder / "10_mychar").mkdir(parents=True)
    reg_folder = root / "reg"
    (reg_folder / "1_person").mkdir(parents=True)
    output_folder = root / "out"
    output_folder.mkdir()
    prompts = root / "prompts.txt"
    prompts.write_text("a photo of mychar\n", encoding="utf-8")
    json_folder = root / "settings"
    json_folder.mkdir()
    return Project(base_model, img_folder, reg_folder, output_folder, prompts, json_folder)
