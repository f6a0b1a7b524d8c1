"""Builders for the bad-input corpus (tests/test_bad_inputs_*.py, tests/test_safe_loading.py): every bad file is made
here, in the test's tmp_path, from Pillow and raw bytes; nothing binary is checked in.

The formats are written from their specifications: PNG (signature, IHDR/IDAT/IEND chunks with CRC-32), the
safetensors layout (an 8-byte little-endian header length, a JSON header with dtype/shape/data_offsets, the data),
and pickle (`__reduce__` returning a callable and its arguments, which unpickling calls).
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sd_scripts.args import TrainArgs
from sd_scripts.dataset import DatasetSettings
from sd_scripts.errors import UserFacingError
from wizard.config import TrainConfig

# Just enough tensor names for the torch-free family rules (checkpoint_header.py) to see an SD 1.x single file.
SD1_KEYS = ("model.diffusion_model.input_blocks.0.0.weight",
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            "first_stage_model.decoder.conv_in.weight")
SDXL_KEYS = ("model.diffusion_model.input_blocks.0.0.weight",
             "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
             "conditioner.embedders.1.model.text_projection",
             "first_stage_model.decoder.conv_in.weight")
FLUX_KEYS = ("double_blocks.0.img_attn.proj.weight", "single_blocks.0.linear1.weight")
LORA_KEYS = ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
             "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
             "lora_unet_down_blocks_0_attentions_0_proj_in.alpha")


# --- images -------------------------------------------------------------------------------------------------------


def write_image(path: Path, size: tuple[int, int] = (64, 64), mode: str = "RGB", **save: object) -> Path:
    """A picture of `size` in `mode` with some structure in it (a gradient), saved by Pillow in the format of the
    file's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    ramp = np.linspace(0, 255, width * height, dtype=np.float64).reshape(height, width).astype(np.uint8)
    Image.fromarray(np.dstack([ramp, ramp[::-1], np.full_like(ramp, 90)])).convert(mode).save(path, **save)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, width: int, height: int, *, bit_depth: int = 8, color_type: int = 2,
              rows: bytes | None = None) -> Path:
    """A PNG written chunk by chunk: with `rows` None only one filtered row of data follows, so the header may
    claim any size (a 20000 x 20000 "decompression bomb" is a few hundred bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = rows if rows is not None else b"\x00" * (1 + width * 3)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(data))
                     + png_chunk(b"IEND", b""))
    return path


def write_rgb16_png(path: Path, width: int, height: int, value: int) -> Path:
    """A 16-bit-per-channel RGB PNG (colour type 2, bit depth 16) whose every sample is `value` (0-65535)."""
    row = b"\x00" + struct.pack(">H", value) * 3 * width
    return write_png(path, width, height, bit_depth=16, rows=row * height)


def write_exif_rotated_jpeg(path: Path, stored: tuple[int, int], orientation: int = 6) -> Path:
    """A JPEG stored `stored` = (width, height) with an EXIF orientation tag; 6 means "rotate 90° clockwise to show",
    so a viewer shows it (height, width): the top rows of the stored pixels (red here) end up on the right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = stored
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[: height // 2] = (255, 0, 0)  # stored top half red
    pixels[height // 2:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    return path


# --- datasets -----------------------------------------------------------------------------------------------------


def good_folder(folder: Path, count: int = 2, caption: str = "mychar, smiling") -> Path:
    """`count` readable 64 px images with UTF-8 captions."""
    for index in range(count):
        write_image(folder / f"good{index}.png")
        (folder / f"good{index}.txt").write_text(caption, encoding="utf-8")
    return folder


def settings_for(train_data_dir: Path, **overrides: object) -> DatasetSettings:
    values: dict[str, object] = {"train_data_dir": str(train_data_dir), "caption_extension": ".txt", "seed": 42,
                                 "resolution": (64, 64)}
    values.update(overrides)
    return DatasetSettings(**values)


def snapshot(*folders: Path) -> dict[str, int]:
    """Every file under `folders` with its size: compared before and after, it shows nothing was written."""
    files: dict[str, int] = {}
    for folder in folders:
        if folder.exists():
            for path in folder.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    files[str(path)] = path.stat().st_size
    return files


# --- model files --------------------------------------------------------------------------------------------------


def write_safetensors(path: Path, keys: tuple[str, ...], metadata: dict[str, str] | None = None,
                      shape: tuple[int, ...] = (2, 2)) -> Path:
    """A valid .safetensors file (tiny float32 tensors under `keys`), written with safetensors' numpy API."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: np.ones(shape, dtype=np.float32) for key in keys}, str(path), metadata=metadata)
    return path


def fake_sd1_model(path: Path) -> Path:
    """A header an SD 1.x checkpoint would have, with 2x2 tensors: every check that reads files passes; the loader
    would refuse it at once (its U-Net has no layout), so a run that got that far would say so instead."""
    return write_safetensors(path, SD1_KEYS)


class RunsCode:
    """Unpickling calls `__reduce__`'s callable: here it would write `marker`, the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def write_malicious_pickle(path: Path, marker: Path, *, as_torch_file: bool = True) -> Path:
    """A checkpoint whose pickle would write `marker` when unpickled without weights_only: torch's zip format (what
    torch.save writes) around a dict holding the object, or a bare pickle of it."""
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": RunsCode(marker)}}
    if as_torch_file:
        import torch

        torch.save(payload, path)  # pickles RunsCode by reference: its __reduce__ names pathlib.Path.write_text
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    return path


def write_os_system_pickle(path: Path, marker: Path) -> Path:
    """The classic: a pickle whose REDUCE calls os.system with a shell command that would create `marker`."""
    import pickle

    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state_dict": Shell()}, protocol=2))
    return path


# --- wizard settings ----------------------------------------------------------------------------------------------


def wizard_config(model: Path, images: Path, output: Path, **settings: object) -> TrainConfig:
    """A CPU-sized wizard config (64 px, no buckets, 1 epoch, AdamW in fp32)."""
    config = TrainConfig(cuda=False)
    values: dict[str, object] = {
        "base_model": str(model), "img_folder": str(images), "output_folder": str(output),
        "change_output_name": "check", "train_resolution": 64, "buckets": False, "batch_size": 1, "num_epochs": 1,
        "net_dim": 4, "alpha": 4.0, "optimizer_type": "AdamW", "mixed_precision": "no", "caption_extension": ".txt",
    }
    values.update(settings)
    for name, value in values.items():
        config.set(name, value)
    return config


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if the trainer reaches its model loader: every case here must be found before."""
    import sd_scripts.training.loop as loop

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("the base model loader was called, but the problem should have been found before loading")

    monkeypatch.setattr(loop, "load_base_model", refuse)


def trainer_refusal(args: TrainArgs) -> str:
    """The sentence the trainer's set-up refuses with (`train()` returns it as its message; calling the session
    directly skips `train()`'s memory release, a garbage collection of half a second per call)."""
    from sd_scripts.training.loop import TrainingSession

    with pytest.raises(UserFacingError) as caught:
        TrainingSession(args, lambda event: None, threading.Event())
    return caught.value.message


def json_file(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
