"""The base model: which checkpoint, and what its file does not say (SD 2.x? v-prediction? realistic?).

The family is read from the file's header when it is chosen (`wizard.model_family`): SD 1.x, SD 2.x or SDXL, and
v-prediction where the file states it. Only what the file leaves open is asked, and the first model question says
what was found. SDXL gets no clip-skip question (sd-scripts' SDXL reads fixed layers), and its v-prediction models
are asked about zero terminal SNR, which NoobAI's v-prediction models were trained with.
"""

from __future__ import annotations

from typing import Any

from wizard.config import TrainConfig, trains_sdxl
from wizard.model_family import found_family, is_sd2, other_kind_of_model
from wizard.question import Question

from questions.build import field_help
from questions.checks import existing_file

MODEL_EXTENSIONS = ("safetensors", "ckpt")
# The settings the file decides: what was answered or loaded for an earlier file gives way when a file is chosen.
FROM_THE_FILE = ("sdxl", "v2", "v_parameterization", "zero_terminal_snr")

REALISTIC = "Is the base model a realistic (photographic) model?"

_exists = existing_file("base model", MODEL_EXTENSIONS, required=True)


def _base_model_problem(answer: Any, config: TrainConfig) -> str | None:
    return _exists(answer, config) or other_kind_of_model(answer)


def _store_base_model(answer: str, config: TrainConfig) -> None:
    """A newly chosen file that says its family decides it again, over an earlier answer or a loaded file's word."""
    config.set("base_model", answer)
    if _family_known(config):
        for name in FROM_THE_FILE:
            config.reset(name)


def _store_v2(answer: bool, config: TrainConfig) -> None:
    config.set("v2", answer)
    if not answer:
        config.set("v_parameterization", False)  # only SD 2.x 768 models predict v


def _family_known(config: TrainConfig) -> bool:
    return found_family(config.get("base_model")) is not None


def _asks_v_prediction(config: TrainConfig) -> bool:
    """SD 2.x and SDXL files that do not state their prediction type; v2 answered yes for a file that cannot tell."""
    family = found_family(config.get("base_model"))
    if family is None:
        return config.get("v2") and not trains_sdxl(config)
    return family.v_prediction is None and (is_sd2(family) or family.is_sdxl)


def found(config: TrainConfig) -> str:
    """"The base model file is SDXL (...). " when its family is known, else nothing."""
    family = found_family(config.get("base_model"))
    return f"The base model file is {family.description}. " if family is not None else ""


def _realistic_text(config: TrainConfig) -> str:
    said = found(config)
    return said + "Is it a realistic (photographic) model?" if said else REALISTIC


def _v_prediction_text(config: TrainConfig) -> str:
    if trains_sdxl(config):
        return found(config) + "Is it a v-prediction model (such as NoobAI-XL v-pred)?"
    return found(config) + "Is it a 768 (v-prediction) version of SD 2.x?"


PATH_QUESTIONS: list[Question] = [
    Question(
        id="base_model", kind="file", field="base_model", extensions=MODEL_EXTENSIONS, store=_store_base_model,
        text="Choose the base model (.safetensors or .ckpt) to train on.",
        help=field_help("base_model"),
        validate=_base_model_problem,
    ),
]

QUESTIONS: list[Question] = [
    Question(
        id="v2", kind="yesno", field="v2", store=_store_v2,
        when=lambda config: not _family_known(config) and not config.get("sdxl"),
        text="Is the base model based on Stable Diffusion 2.x?",
        help=field_help("v2"),
    ),
    Question(
        id="v_parameterization", kind="yesno", field="v_parameterization", when=_asks_v_prediction,
        text="Is it a 768 (v-prediction) version of SD 2.x?", text_for=_v_prediction_text,
        help=field_help("v_parameterization"),
    ),
    Question(
        id="zero_terminal_snr", kind="yesno", field="zero_terminal_snr",
        when=lambda config: trains_sdxl(config) and config.get("v_parameterization"),
        text="Train with zero terminal SNR? (NoobAI's v-prediction models need it)",
        text_for=lambda config: found(config) + "Train with zero terminal SNR? (NoobAI's v-prediction models need it)",
        help=field_help("zero_terminal_snr"),
    ),
    Question(
        id="realistic", kind="yesno", field="clip_skip", when=lambda config: not trains_sdxl(config),
        current=lambda config: config.get("clip_skip") == 1,
        store=lambda answer, config: config.set("clip_skip", 1 if answer else 2),
        text=REALISTIC, text_for=_realistic_text,
        help="Realistic and base SD models read the last CLIP layer (clip skip 1); anime models, descended from "
             "NovelAI, read the one before it (clip skip 2). Default no (clip skip 2).",
    ),
]
