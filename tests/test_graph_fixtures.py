"""Shared helpers for the question-graph, queue and command-line tests: a tiny project on disk and its answers.

The paths only have to exist for the questions' checks; nothing here trains, so the model file is a stub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
