"""Loading in the training precision (issue 14 item 2, memory): each weight is cast to its part's dtype as it is read,
so a bf16 run never holds the model in float32 and an fp16 file for a float32 run is never in memory twice.

sd-scripts loads every weight in float32 and casts the U-Net and text encoder to the weight dtype afterwards; the
values must be the very ones that gives (fp16 -> fp32 -> bf16 rounds exactly like fp16 -> bf16), only the peak differs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sd_scripts.models import load_base_model
from sd_scripts.models.checkpoint_file import read_checkpoint

MIB = 1024**2


def parameters(model) -> dict[str, torch.Tensor]:
    parts = {"unet": model.unet, "text_encoder": model.text_encoder, "vae": model.vae}
    return {f"{part}.{name}": value for part, module in parts.items() for name, value in module.state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_a_bf16_load_gives_the_float32_load_cast_after_with_the_vae_kept_float32(demo, tmp_path, suffix):
    path = demo.model
    if suffix == ".ckpt":  # the same weights as a pickle, stored in fp16 as many .ckpt downloads are
        path = tmp_path / "demo.ckpt"
        torch.save({"state_dict": {key: value.half() for key, value in load_file(demo.model).items()}}, path)
    float32 = parameters(load_base_model(path))
    bf16 = load_base_model(path, dtype=torch.bfloat16, vae_dtype=torch.float32)
    assert {p.dtype for p in bf16.unet.parameters()} | {p.dtype for p in bf16.text_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16.vae.parameters()} == {torch.float32}
    loaded = parameters(bf16)
    assert loaded.keys() == float32.keys()
    for name, value in float32.items():
        expected = value if name.startswith("vae.") or not value.is_floating_point() else value.to(torch.bfloat16)
        assert torch.equal(loaded[name], expected), name


def test_a_diffusers_folder_loads_in_the_training_precision_too(demo, tmp_path):
    from sd_scripts.models.diffusers_folder import save_diffusers_folder

    save_diffusers_folder(load_base_model(demo.model), tmp_path / "folder")
    float32 = parameters(load_base_model(tmp_path / "folder"))
    loaded = parameters(load_base_model(tmp_path / "folder", dtype=torch.bfloat16, vae_dtype=torch.float32))
    for name, value in float32.items():
        expected = value if name.startswith("vae.") or not value.is_floating_point() else value.to(torch.bfloat16)
        assert loaded[name].dtype == expected.dtype and torch.equal(loaded[name], expected), name


def test_a_separate_vae_file_loads_in_the_asked_precision(demo, tmp_path):
    from sd_scripts.models import load_vae
    from sd_scripts.models.ldm_layout import vae_to_ldm

    vae = load_base_model(demo.model).vae
    path = tmp_path / "vae.safetensors"
    save_file(vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels), prefix=""), path)
    half = load_vae(path, torch.bfloat16).state_dict()
    for name, value in vae.state_dict().items():
        assert half[name].dtype == torch.bfloat16 and torch.equal(half[name], value.to(torch.bfloat16)), name


def test_integer_tensors_are_never_cast(tmp_path):
    path = tmp_path / "mixed.safetensors"
    save_file({"model.ids": torch.arange(77, dtype=torch.int64), "model.w": torch.ones(3, 3, dtype=torch.float16)}, path)
    tensors, _ = read_checkpoint(path, lambda key: torch.bfloat16)
    assert tensors.shapes == {"model.ids": (77,), "model.w": (3, 3)}
    assert tensors["model.ids"].dtype == torch.int64 and torch.equal(tensors["model.ids"], torch.arange(77))
    assert tensors["model.w"].dtype == torch.bfloat16
    assert set(tensors.under("model.")) == {"ids", "w"}


# The peak is measured in a child process: ru_maxrss is the high-water mark of the resident set, which only grows.
PEAK_CHILD = textwrap.dedent("""
    import resource, sys, torch
    from pathlib import Path
    from sd_scripts.models.checkpoint_file import read_checkpoint
    target = getattr(torch, sys.argv[2])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tensors, _ = read_checkpoint(Path(sys.argv[1]), lambda key: target)
    kept = {key: tensors[key] for key in tensors}
    assert all(value.dtype == target for value in kept.values())
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
""")

TENSORS, SIDE = 24, 1024  # 24 weights of 1024 x 1024: 96 MiB in fp32, 4 MiB each


@pytest.mark.parametrize(("stored", "target"), [(torch.float32, "bfloat16"), (torch.float16, "float32"),
                                                (torch.float16, "bfloat16")])
def test_the_peak_while_loading_is_the_cast_weights_plus_one_tensor(tmp_path, stored, target):
    path = tmp_path / "weights.safetensors"
    generator = torch.Generator().manual_seed(0)
    save_file({f"w{i}": torch.randn(SIDE, SIDE, generator=generator).to(stored) for i in range(TENSORS)}, path)
    file_bytes = path.stat().st_size
    cast_bytes = TENSORS * SIDE * SIDE * getattr(torch, target).itemsize
    one_tensor = SIDE * SIDE * 4  # the largest read buffer or cast copy alive at once
    child = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(path), target], capture_output=True, text=True,
                           check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                                            "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    grown = int(child.stdout.split()[-1])
    # Reading the whole file and casting after would hold both: the file's bytes plus the cast copies.
    assert grown < cast_bytes + 2 * one_tensor + 16 * MIB < file_bytes + cast_bytes, (grown / MIB, file_bytes / MIB)
