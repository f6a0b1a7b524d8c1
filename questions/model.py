"""The base model: which checkpoint, which Stable Diffusion family, which text-encoder layer."""

from __future__ import annotations

from wizard.config import TrainConfig
from wizard.question import Question

from questions.build import field_help
from questions.checks import existing_file

MODEL_EXTENSIONS = ("safetensors", "ckpt")


def _store_v2(answer: bool, config: TrainConfig) -> None:
    config.set("v2", answer)
    if not answer:
        config.set("v_parameterization", False)  # only SD 2.x 768 models predict v


PATH_QUESTIONS: list[Question] = [
    Question(
        id="base_model", kind="file", field="base_model", extensions=MODEL_EXTENSIONS,
        text="Choose the base model (.safetensors or .ckpt) to train on.",
        help=field_help("base_model"),
        validate=existing_file("base model", MODEL_EXTENSIONS, required=True),
    ),
]

QUESTIONS: list[Question] = [
    Question(
        id="v2", kind="yesno", field="v2", store=_store_v2,
        text="Is the base model based on Stable Diffusion 2.x?",
        help=field_help("v2"),
    ),
    Question(
        id="v_parameterization", kind="yesno", field="v_parameterization",
        when=lambda config: config.get("v2"),
        text="Is it a 768 (v-prediction) version of SD 2.x?",
        help=field_help("v_parameterization"),
    ),
    Question(
        id="realistic", kind="yesno", field="clip_skip",
        current=lambda config: config.get("clip_skip") == 1,
        store=lambda answer, config: config.set("clip_skip", 1 if answer else 2),
        text="Is the base model a realistic (photographic) model?",
        help="Realistic and base SD models read the last CLIP layer (clip skip 1); anime models, descended from "
             "NovelAI, read the one before it (clip skip 2). Default no (clip skip 2).",
    ),
]
