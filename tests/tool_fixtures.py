"""Shared by the tests/test_tool_*.py files: one torch thread, and tiny SD1.5-layout checkpoints on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sd_scripts.saving.lora_file import load_lora_file


@pytest.fixture(autouse=True)
def one_thread():
    """Many small SVDs: on 2 shared cores, one thread is ~30x faster than two fighting over a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """The demo's random tiny SD1.5-layout model (no pre-training) written as an LDM single file."""
    from sd_scripts.demo import tiny_sd15_model
    from sd_scripts.models import save_ldm_checkpoint

    save_ldm_checkpoint(tiny_sd15_model(seed), path)
    return path


def deltas(path: Path) -> dict[str, torch.Tensor]:
    """{module: up @ down * alpha / rank} of a LoRA file, flattened to 2-D."""
    tensors, _ = load_lora_file(path)
    result = {}
    for key, down in tensors.items():
        if key.endswith(".lora_down.weight"):
            name = key.removesuffix(".lora_down.weight")
            up = tensors[f"{name}.lora_up.weight"]
            alpha = float(tensors[f"{name}.alpha"])
            result[name] = up.float().flatten(1) @ down.float().flatten(1) * alpha / down.shape[0]
    return result
