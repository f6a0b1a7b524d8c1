"""Which model family a base model file or folder is, read without torch: the rules live here, once.

The wizard asks this before anything heavy is imported (a safetensors header is a few kilobytes of JSON), and the
loader (family.py) applies the same rules to the tensors it has read.

Rules, in order:
1. Structure. A LoRA/LyCORIS file, an SDXL refiner, FLUX and SD3 are refused with one sentence each. An SD
   checkpoint has an LDM U-Net (`model.diffusion_model.*`); its text encoders say the family: OpenAI CLIP in
   transformers layout (`cond_stage_model.transformer.*`) is SD1, OpenCLIP (`cond_stage_model.model.*`) SD2, and
   `conditioner.embedders.0.transformer.*` (CLIP-L) with `conditioner.embedders.1.model.*` (OpenCLIP-G) is SDXL base.
   Widths do not matter, so tiny test models of the same layout are recognised too.
2. Prediction type, when the file states it: a `v_pred` or `ztsnr` key (ComfyUI's markers, which NoobAI's
   v-prediction models carry), the safetensors metadata `modelspec.prediction_type` ("v" / "epsilon"), or
   `modelspec.architecture` (SD2's ".../-v" suffix = 768-v). A diffusers folder states it in its scheduler config.
3. What the file does not state stays None here: the loader runs A1111's U-Net test for SD2 (family.py), and
   follows the user's answer for SD1 and SDXL, as sd-scripts does.
"""

from __future__ import annotations

import json
import os
import pickletools
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from sd_scripts.errors import UserFacingError

# `ss_base_model_version` values, as sd-scripts writes them.
SD_V1 = "sd_v1"
SD_V2 = "sd_v2"
SD_V2_V = "sd_v2_v"
SDXL = "sdxl_base_v1-0"

# Key prefixes of the single-file (LDM / SGM) layout.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."  # OpenAI CLIP in transformers layout (+ "text_model.")
SD2_TEXT_PREFIX = "cond_stage_model.model."  # OpenCLIP layout
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer."  # CLIP-L in transformers layout (+ "text_model.")
SDXL_TEXT_2_PREFIX = "conditioner.embedders.1.model."  # OpenCLIP-G layout, with its text projection
SDXL_REFINER_TEXT_PREFIX = "conditioner.embedders.0.model."  # the refiner's only encoder, OpenCLIP-G

MAX_HEADER_BYTES = 100_000_000  # a real header is a few hundred kilobytes; more means a damaged file
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

NOT_A_BASE_MODEL = {
    "lora": "This file is a LoRA, not a base model; choose a Stable Diffusion checkpoint as the base model.",
    "refiner": (
        "This is an SDXL refiner, which only polishes finished images and cannot be trained on its own; "
        "choose an SDXL base model (or one built on it, such as Pony, Illustrious or NoobAI)."
    ),
    "flux": "This is a FLUX model, which this trainer does not support; choose an SD 1.x, SD 2.x or SDXL model.",
    "sd3": "This is a Stable Diffusion 3 model, which this trainer does not support; choose an SD 1.x, SD 2.x or SDXL model.",
    "other": (
        "This file is not a Stable Diffusion 1.x/2.x or SDXL checkpoint (its U-Net or text encoder is missing); "
        "choose a full SD model file."
    ),
}
FAMILY_NAMES = {SD_V1: "SD 1.x", SD_V2: "SD 2.x", SD_V2_V: "SD 2.x", SDXL: "SDXL"}

# What a checkpoint's pickle may name: tensors, storages and plain containers. Anything else (os.system,
# builtins.exec, a training framework's objects) means the file carries code; torch.load(weights_only=True) refuses
# it when loading too, and the pre-flight check says so before anything loads.
PICKLE_SAFE_MODULES = ("torch", "collections", "_codecs")
PICKLE_SAFE_NAMES = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "bytearray"),
    ("builtins", "slice"), ("__builtin__", "set"), ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
}
LEGACY_PICKLES = 4  # torch's pre-1.6 format: magic number, protocol, system info, then the object
CONTAINS_CODE = ("{name} contains code, not only weights, and was not opened for your safety; use a .safetensors "
                 "version of this model instead.")
# The parts a diffusers model folder needs, by pipeline family.
DIFFUSERS_PARTS = ("unet", "vae", "text_encoder")
SDXL_DIFFUSERS_PARTS = (*DIFFUSERS_PARTS, "text_encoder_2")


@dataclass(frozen=True)
class ModelFamily:
    """What the file says about itself. `version` is None for a .ckpt: its keys are in a pickle, which only the
    loader opens (safely, with torch); `v_prediction` is None when the file does not say."""

    version: str | None  # SD_V1 | SD_V2 | SD_V2_V | SDXL | None
    v_prediction: bool | None
    description: str  # for the user, e.g. "SDXL (v-prediction, stated in the file)"

    @property
    def is_sdxl(self) -> bool:
        return self.version == SDXL


def read_model_family(path: str | os.PathLike) -> ModelFamily:
    """The family of a single file (.safetensors: from its header; .ckpt: unknown until loaded) or a diffusers
    folder (from model_index.json and its configs). Raises UserFacingError for what is not a trainable base model."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _folder_family(path)
    if not path.is_file():
        raise UserFacingError(f"The model file {path} does not exist; check the path and choose the file again.")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return ModelFamily(None, None, "a .ckpt checkpoint (its family is read from the weights when it loads)")
    if suffix != ".safetensors":
        raise UserFacingError(
            f"{path.name} is not a model file this trainer can read; choose a .safetensors or .ckpt Stable Diffusion model."
        )
    keys, metadata = read_safetensors_header(path)
    return family_from_keys(keys, metadata)


def read_safetensors_header(path: Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """The tensor shapes and the `__metadata__` of a .safetensors file: an 8-byte length, then JSON."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise ValueError("header length out of range")
            header = json.loads(handle.read(length))
        metadata = header.pop("__metadata__", None) or {}
        shapes = {key: list(entry["shape"]) for key, entry in header.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserFacingError(f"{path.name} is damaged or incomplete (its header cannot be read); download it again.") from error
    return shapes, metadata


def family_from_keys(keys: Iterable[str], metadata: Mapping[str, str] | None = None) -> ModelFamily:
    """Rules 1 and 2 on a checkpoint's tensor names and safetensors metadata. An SD2 file that does not state its
    prediction type comes back as SD_V2 with v_prediction None."""
    keys = set(keys)
    version = _structure(keys)
    v_prediction = stated_v_prediction(keys, metadata or {})
    if version == SD_V2 and v_prediction:
        version = SD_V2_V
    return ModelFamily(version, v_prediction, describe(version, v_prediction))


def _structure(keys: set[str]) -> str:
    """Rule 1: SD_V1, SD_V2 or SDXL, or a UserFacingError that says what the file is instead."""
    if any(k.startswith(("lora_", "lycoris_")) or ".lora_down." in k or ".lora_A." in k or ".hada_w1_a" in k for k in keys):
        raise UserFacingError(NOT_A_BASE_MODEL["lora"])
    if any(k.startswith(("double_blocks.", "single_blocks.", f"{UNET_PREFIX}double_blocks.")) for k in keys):
        raise UserFacingError(NOT_A_BASE_MODEL["flux"])
    if any(k.startswith(("joint_blocks.", f"{UNET_PREFIX}joint_blocks.")) for k in keys):
        raise UserFacingError(NOT_A_BASE_MODEL["sd3"])
    has_sdxl_text_2 = any(k.startswith(SDXL_TEXT_2_PREFIX) for k in keys)
    if not has_sdxl_text_2 and any(k.startswith(SDXL_REFINER_TEXT_PREFIX) for k in keys):
        raise UserFacingError(NOT_A_BASE_MODEL["refiner"])
    if f"{UNET_PREFIX}input_blocks.0.0.weight" not in keys:
        raise UserFacingError(NOT_A_BASE_MODEL["other"])
    if has_sdxl_text_2 and any(k.startswith(SDXL_TEXT_PREFIX) for k in keys):
        return SDXL
    if any(k.startswith(SD2_TEXT_PREFIX) for k in keys):
        return SD_V2
    if any(k.startswith(SD1_TEXT_PREFIX) for k in keys):
        return SD_V1
    raise UserFacingError(NOT_A_BASE_MODEL["other"])


def stated_v_prediction(keys: Iterable[str], metadata: Mapping[str, str]) -> bool | None:
    """Rule 2: True/False when the file states its prediction type, None when it does not."""
    if not {"v_pred", "ztsnr"}.isdisjoint(keys):
        return True
    prediction = metadata.get("modelspec.prediction_type", "").lower()
    if prediction in ("v", "v_prediction"):
        return True
    if prediction in ("epsilon", "eps"):
        return False
    architecture = metadata.get("modelspec.architecture", "")
    if architecture.startswith("stable-diffusion-v2"):
        return architecture.endswith("-v")
    return None


def describe(version: str | None, v_prediction: bool | None) -> str:
    """A short description for the user, e.g. "SDXL (v-prediction, stated in the file)"."""
    name = FAMILY_NAMES[version]
    if v_prediction is None:
        return f"{name} (the file does not say whether it predicts noise or velocity)"
    return f"{name} ({'v-prediction' if v_prediction else 'noise prediction (epsilon)'}, stated in the file)"


def check_model_files(base_model: str | os.PathLike, vae: str | os.PathLike | None = None) -> ModelFamily:
    """Everything about the base model (and a separate VAE) that can be known without loading it: the family
    (`read_model_family`'s refusals), a file cut short, a pickle that would run code, a diffusers folder missing a
    part. The trainer and the pre-flight report call it before any model loads."""
    path = Path(base_model).expanduser()
    family = read_model_family(path)
    if path.is_dir():
        parts = SDXL_DIFFUSERS_PARTS if family.is_sdxl else DIFFUSERS_PARTS
        missing = [part for part in parts if not _has_weights(path / part)]
        if missing:
            raise UserFacingError(f"The diffusers model folder {path} has no complete {', '.join(missing)} "
                                  "(a config.json and its weights); copy or download the whole model folder again.")
    else:
        check_complete(path)
    if vae:
        vae_path = Path(vae).expanduser()
        if not vae_path.exists():
            raise UserFacingError(f"The VAE {vae_path} does not exist; check the path and choose the VAE again.")
        if vae_path.is_file():
            if vae_path.suffix.lower() not in (".safetensors", *PICKLE_SUFFIXES):
                raise UserFacingError(f"{vae_path.name} is not a VAE file this trainer can read; choose a "
                                      ".safetensors or .ckpt VAE.")
            if vae_path.suffix.lower() == ".safetensors":
                read_safetensors_header(vae_path)
            check_complete(vae_path)
    return family


def check_complete(path: Path) -> None:
    """A .safetensors file as long as its header says; a pickle checkpoint whole and naming only tensors."""
    if path.suffix.lower() == ".safetensors":
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(length))
        end = max((entry.get("data_offsets", [0, 0])[1] for key, entry in header.items()
                   if key != "__metadata__" and isinstance(entry, dict)), default=0)
        size = path.stat().st_size
        if size < 8 + length + end:
            raise UserFacingError(f"{path.name} is incomplete ({size:,} of its {8 + length + end:,} bytes); the "
                                  "download or copy was cut short, download it again.")
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        unsafe = next((found for found in pickle_globals(path) if found is None or not _safe_global(*found)), False)
        if unsafe is not False:
            raise UserFacingError(CONTAINS_CODE.format(name=path.name))


def pickle_globals(path: Path) -> Iterator[tuple[str, str] | None]:
    """The (module, name) pairs a PyTorch checkpoint's pickle would import, read with pickletools, which only
    parses (nothing is imported or run); None for one it names in a way that cannot be followed."""
    damaged = UserFacingError(f"{path.name} is damaged or incomplete (it is not a whole PyTorch checkpoint); "
                              "download it again.")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [name for name in archive.namelist() if name.endswith("data.pkl")]
                if not names:
                    raise damaged
                with archive.open(names[0]) as stream:
                    yield from _stream_globals(stream)
            return
        with open(path, "rb") as stream:
            start = stream.read(2)
            if start == b"PK":  # a zip whose end (its table of contents) is missing: cut short
                raise damaged
            if not start.startswith(b"\x80"):  # every pickle torch writes starts with its protocol
                raise UserFacingError(f"{path.name} is not a PyTorch checkpoint; choose a .safetensors or .ckpt "
                                      "Stable Diffusion model.")
            stream.seek(0)
            for _ in range(LEGACY_PICKLES):
                yield from _stream_globals(stream)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, UnicodeDecodeError):
        raise damaged from None


def _stream_globals(stream) -> Iterator[tuple[str, str] | None]:
    """The globals of one pickle in `stream`, following the strings pushed and memoised before STACK_GLOBAL."""
    pushed: list[object] = []  # what each push put on the stack, strings kept, anything else as None
    memo: dict[int, object] = {}
    for opcode, argument, _position in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, _, attribute = str(argument).partition(" ")
            yield module, attribute
        elif name == "STACK_GLOBAL":
            module, attribute = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            yield (module, attribute) if isinstance(module, str) and isinstance(attribute, str) else None
            pushed[-2:] = [None]
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(argument)] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(int(argument)))
        elif opcode.stack_after:
            pushed.append(argument if isinstance(argument, str) else None)


def _safe_global(module: str, name: str) -> bool:
    return module.split(".")[0] in PICKLE_SAFE_MODULES or (module, name) in PICKLE_SAFE_NAMES


def _has_weights(part: Path) -> bool:
    return (part / "config.json").is_file() and any(
        child.suffix in (".safetensors", ".bin") for child in part.iterdir())


def _folder_family(folder: Path) -> ModelFamily:
    """A diffusers folder: the pipeline class in model_index.json, the text encoder's activation (SD2's OpenCLIP
    uses gelu, OpenAI CLIP quick_gelu) and the scheduler's prediction_type."""
    index = _read_json(folder / "model_index.json")
    if index is None:
        raise UserFacingError(
            f"The folder {folder} is not a diffusers model (it has no model_index.json); choose a model file or a diffusers model folder."
        )
    pipeline = str(index.get("_class_name", ""))
    if pipeline.startswith("StableDiffusionXL"):
        if not (folder / "text_encoder" / "config.json").is_file():  # the refiner has only text_encoder_2
            raise UserFacingError(NOT_A_BASE_MODEL["refiner"])
        version = SDXL
    elif pipeline.startswith("Flux"):
        raise UserFacingError(NOT_A_BASE_MODEL["flux"])
    elif pipeline.startswith("StableDiffusion3"):
        raise UserFacingError(NOT_A_BASE_MODEL["sd3"])
    elif pipeline.startswith("StableDiffusion"):
        text_config = _read_json(folder / "text_encoder" / "config.json") or {}
        version = SD_V2 if text_config.get("hidden_act") == "gelu" else SD_V1
    else:
        raise UserFacingError(NOT_A_BASE_MODEL["other"])
    v_prediction = folder_states_v_prediction(folder)
    if version == SD_V2 and v_prediction:
        version = SD_V2_V
    return ModelFamily(version, v_prediction, describe(version, v_prediction))


def folder_states_v_prediction(folder: Path) -> bool | None:
    """The scheduler config's prediction_type, when the folder has one."""
    config = _read_json(folder / "scheduler" / "scheduler_config.json")
    if config is None:
        return None
    return config.get("prediction_type", "epsilon") == "v_prediction"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UserFacingError(f"{path} is damaged; copy or download the whole model folder again.") from error
