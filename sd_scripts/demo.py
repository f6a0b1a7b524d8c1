"""The demo: a tiny model with the real SD1.5 (or SDXL) block layout and a small dataset of drawn shapes, built
deterministically (same bytes every time) in well under a minute, and reused when already built.

The model has SD1.5's exact module names (so every kohya LoRA key matches real SD1.5) at tiny widths: UNet
(32, 32, 64, 64) with 3 cross-attention down blocks + 1 plain, 2 layers per block, context 32; a 4-block VAE of 32
channels (factor 8: 64 px images -> 8x8 latents); a 2-layer, 32-wide CLIP text encoder with the real 49,408-token
vocabulary. Its weights are pre-trained here for a few seconds (see `sd_scripts.demo_pretraining`): the VAE
reconstructs drawings and the UNet draws stripes, so the demo LoRA, trained on shapes, shows a visible change.
The SDXL demo (`tiny_sdxl_model`) is built and pre-trained the same way, on the same images and prompts.

Heavy libraries are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import ImageDraw

    from sd_scripts.models import BaseModel

DEMO_VERSION = 2  # bump when anything built here changes, so old demo folders are rebuilt
TRIGGER_WORD = "shpz"
IMAGE_SIZE = 64
REPEATS_FOLDER = "10_shapes"
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (245, 245, 240)
IMAGE_COUNT = 10
SAMPLE_PROMPTS = (
    f"{TRIGGER_WORD}, a red circle --w 64 --h 64 --s 10 --l 7.5 --d 1",
    f"{TRIGGER_WORD}, a blue triangle --w 64 --h 64 --s 10 --l 7.5 --d 2",
)


@dataclass(frozen=True)
class DemoPaths:
    model: Path  # single-file .safetensors of the SD1.5 or SDXL layout
    images: Path  # train_data_dir: holds the `10_shapes/` folder of images and .txt captions
    prompts: Path  # sample prompts, one per line, sd-scripts' `--w/--h/--s/--l/--d` options


DEMO_FAMILIES = {"sd15": ("tiny_sd15.safetensors", "demo.json"), "sdxl": ("tiny_sdxl.safetensors", "demo_sdxl.json")}


def build_demo(root: str | os.PathLike, family: str = "sd15") -> DemoPaths:
    """Build the demo of `family` ("sd15" or "sdxl") under `root`, or reuse it when its marker says every file is
    the current version. Both families can share a root: the images and prompts are the same."""
    root = Path(root)
    model_name, marker_name = DEMO_FAMILIES[family]
    paths = DemoPaths(model=root / model_name, images=root / "images", prompts=root / "prompts.txt")
    marker = root / marker_name
    if _is_current(marker, root):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    written = _write_dataset(paths.images)
    _write_atomically(paths.prompts, ("\n".join(SAMPLE_PROMPTS) + "\n").encode("utf-8"))
    written.append(paths.prompts)
    from sd_scripts.demo_pretraining import pretrain_demo_model
    from sd_scripts.models import save_ldm_checkpoint

    model = tiny_sdxl_model() if family == "sdxl" else tiny_sd15_model()
    pretrain_demo_model(model)
    save_ldm_checkpoint(model, paths.model, overwrite=True)
    written.append(paths.model)
    files = {str(p.relative_to(root)): _sha256(p) for p in written}
    _write_atomically(marker, json.dumps({"version": DEMO_VERSION, "files": files}, indent=1).encode("utf-8"))
    return paths


def tiny_sd15_model(seed: int = 0) -> BaseModel:
    """The demo model in memory, random: SD1.5's block layout at tiny widths, seeded, from the shipped SD1.5 configs."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sd_scripts.models import SD_V1, BaseModel
    from sd_scripts.models.architecture import attention_heads
    from sd_scripts.models.shipped_assets import component_config
    from sd_scripts.models.tokenizers import load_tokenizer

    unet_config = component_config(SD_V1, "unet") | {
        "sample_size": IMAGE_SIZE // 8,
        "block_out_channels": [32, 32, 64, 64],
        "cross_attention_dim": 32,
    }
    vae_config = component_config(SD_V1, "vae") | {"sample_size": IMAGE_SIZE, "block_out_channels": [32, 32, 32, 32]}
    text_config = component_config(SD_V1, "text_encoder") | {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": attention_heads(32),
        "projection_dim": 32,
    }
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(unet_config).eval()
    vae = AutoencoderKL.from_config(vae_config).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config)).eval()
    return BaseModel(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_tokenizer(v2=False),
        version=SD_V1,
        v2=False,
        v_parameterization=False,
        path="",
        notes=[],
    )


def tiny_sdxl_model(seed: int = 0) -> BaseModel:
    """A random model with SDXL's real module layout at tiny widths, seeded, from the shipped SDXL configs.

    Everything that makes a key name exists as in SDXL base: three U-Net levels (plain, then two with attention of
    depth 2 and 10, 10 in the middle block), linear projections, the size/crop embedding ("text_time", 256 per id)
    and two text encoders (CLIP-L with quick_gelu; OpenCLIP-G with gelu and a text projection). Only widths and
    layer counts of the encoders are small: U-Net (32, 64, 64), context 32 + 32, VAE 32 wide.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sd_scripts.models import SDXL, BaseModel
    from sd_scripts.models.architecture import attention_heads
    from sd_scripts.models.shipped_assets import component_config
    from sd_scripts.models.tokenizers import load_sdxl_tokenizers

    width = 32  # of each text encoder, and of te2's projection (the pooled embedding)
    channels = [32, 64, 64]
    unet_config = component_config(SDXL, "unet") | {
        "sample_size": IMAGE_SIZE // 8,
        "block_out_channels": channels,
        "attention_head_dim": [attention_heads(c) for c in channels],
        "cross_attention_dim": 2 * width,
        "projection_class_embeddings_input_dim": 6 * 256 + width,
    }
    vae_config = component_config(SDXL, "vae") | {"sample_size": IMAGE_SIZE, "block_out_channels": [32, 32, 32, 32]}
    small = {"hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 2,
             "num_attention_heads": attention_heads(width), "projection_dim": width}
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(unet_config).eval()
    vae = AutoencoderKL.from_config(vae_config).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(**component_config(SDXL, "text_encoder") | small)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**component_config(SDXL, "text_encoder_2") | small)).eval()
    tokenizer, tokenizer_2 = load_sdxl_tokenizers()
    return BaseModel(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        version=SDXL,
        v2=False,
        v_parameterization=False,
        path="",
        notes=[],
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )


def _write_dataset(images: Path) -> list[Path]:
    """IMAGE_COUNT drawings of one shape each, with a caption that starts with the trigger word."""
    from PIL import Image, ImageDraw

    folder = images / REPEATS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(DEMO_VERSION)
    written = []
    for index in range(IMAGE_COUNT):
        colour = list(COLOURS)[index % len(COLOURS)]
        shape = SHAPES[index % len(SHAPES)]
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
        size = rng.randint(24, 40)
        left, top = rng.randint(4, IMAGE_SIZE - size - 4), rng.randint(4, IMAGE_SIZE - size - 4)
        draw_shape(ImageDraw.Draw(image), shape, (left, top, left + size, top + size), COLOURS[colour])
        stem = folder / f"{index:02d}_{colour}_{shape}"
        png = io.BytesIO()
        image.save(png, format="PNG")
        _write_atomically(stem.with_suffix(".png"), png.getvalue())
        _write_atomically(stem.with_suffix(".txt"), f"{TRIGGER_WORD}, a {colour} {shape}\n".encode("utf-8"))
        written += [stem.with_suffix(".png"), stem.with_suffix(".txt")]
    return written


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    """A filled circle, square or (upward) triangle inside the square `box` = (left, top, right, bottom)."""
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(left, bottom), (right, bottom), ((left + right) // 2, top)], fill=colour)


def _is_current(marker: Path, root: Path) -> bool:
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if recorded.get("version") != DEMO_VERSION:
        return False
    files = recorded.get("files", {})
    return bool(files) and all((root / name).is_file() and _sha256(root / name) == digest for name, digest in files.items())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace the file in one step; a file that already holds these bytes is left untouched (the other family's
    demo in the same folder shares the images and prompts)."""
    if path.is_file() and path.read_bytes() == data:
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
