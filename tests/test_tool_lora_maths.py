"""The LoRA-file tools on tiny SD1.5-layout LoRAs: resize (SVD truncation, sd-scripts' dynamic rank rules, metadata)
and merging LoRAs (SVD of the summed differences, exact concatenation). Expected values are computed here from the
formulas (torch.linalg.svd of up @ down * scale, sd-scripts' rank rules written out), not read from the tools."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.saving import load_lora_file, save_lora
from sd_scripts.tools.merge_lora import concat_loras, merge_loras
from sd_scripts.tools.resize_lora import ResizeTarget, read_targets_file, resize_lora, resize_many
from test_lora_fixtures import randomize, tiny_text_encoder, tiny_unet
from tool_fixtures import deltas, one_thread  # noqa: F401  (autouse)

SPECTRUM = [10.0, 8.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.1]
MODULE = "lora_te_text_model_encoder_layers_0_mlp_fc1"  # a 32 -> 64 Linear of the tiny text encoder


def random_lora(tmp_path: Path, name: str, *, dim: int, alpha: float, conv_dim: int | None = None,
                seed: int = 1, metadata: dict | None = None) -> Path:
    network = LoRANetwork(tiny_text_encoder(), tiny_unet(), dim=dim, alpha=alpha, conv_dim=conv_dim,
                          conv_alpha=None if conv_dim is None else conv_dim / 2)
    randomize(network, seed=seed)
    return save_lora(network.state_dict(), tmp_path / name, metadata=metadata)


def spectrum_lora(tmp_path: Path, values: list[float], *, alpha: float = 4.0) -> Path:
    """One module whose up @ down has exactly the singular values `values` (orthonormal U and V from QR)."""
    generator = torch.Generator().manual_seed(5)
    u, _ = torch.linalg.qr(torch.randn(64, len(values), generator=generator))
    v, _ = torch.linalg.qr(torch.randn(32, len(values), generator=generator))
    up = u * torch.tensor(values)
    tensors = {f"{MODULE}.lora_down.weight": v.T.contiguous(), f"{MODULE}.lora_up.weight": up.contiguous(),
               f"{MODULE}.alpha": torch.tensor(alpha)}
    return save_lora(tensors, tmp_path / f"spectrum-{len(list(tmp_path.iterdir()))}.safetensors")


# sd-scripts' resize_lora.py rank rules, written out from its source: index clamped to [0, n-1], rank = index + 1,
# capped by --new_rank; an all-zero module gets rank 1.
def expected_rank(values: list[float], method: str, param: float, cap: int) -> int:
    s = np.array(values)
    if method == "sv_ratio":
        index = int(np.sum(s > s[0] / param)) - 1
    elif method == "sv_cumulative":
        index = int(np.searchsorted(np.cumsum(s) / s.sum(), param))
    else:  # sv_fro
        index = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), param**2))
    return min(max(0, min(index, len(s) - 1)) + 1, cap)


def test_a_lora_resized_to_its_true_rank_keeps_its_weight_differences(tmp_path):
    source = random_lora(tmp_path, "r4.safetensors", dim=4, alpha=2.0, conv_dim=4)
    result = resize_lora(source, tmp_path / "same.safetensors", ResizeTarget(4))
    before, after = deltas(source), deltas(result.path)
    assert before.keys() == after.keys() and len(before) > 200  # conv layers included
    for name in before:
        torch.testing.assert_close(after[name], before[name], atol=2e-6, rtol=1e-4)
    assert all(module.fro_retained == pytest.approx(1.0, abs=1e-5) for module in result.modules)


def test_resizing_down_gives_the_svd_truncation_and_keeps_the_scale(tmp_path):
    source = random_lora(tmp_path, "r8.safetensors", dim=8, alpha=4.0, conv_dim=6,
                         metadata={"ss_network_dim": "8", "ss_network_alpha": "4.0", "ss_training_comment": "mine",
                                   "sshs_model_hash": "old"})
    result = resize_lora(source, tmp_path / "r3.safetensors", ResizeTarget(3, conv_rank=2))
    tensors, metadata = load_lora_file(result.path)
    original, _ = load_lora_file(source)
    after = deltas(result.path)
    for name, delta in deltas(source).items():
        u, s, vh = torch.linalg.svd(delta)  # delta already holds the scale, which only multiplies S
        rank = 2 if original[f"{name}.lora_down.weight"].shape[2:] == (3, 3) else 3
        torch.testing.assert_close(after[name], u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank], atol=1e-5, rtol=1e-4)
        old_scale = float(original[f"{name}.alpha"]) / original[f"{name}.lora_down.weight"].shape[0]
        assert float(tensors[f"{name}.alpha"]) == pytest.approx(old_scale * rank)
    assert metadata["ss_network_dim"] == "3" and metadata["ss_network_alpha"] == str(4.0 / 8 * 3)
    assert metadata["ss_training_comment"] == "dimension is resized from 8 to 3 (conv: 2); mine"
    assert metadata["sshs_model_hash"] not in ("old", "") and len(metadata["sshs_legacy_hash"]) == 8
    assert all(tensor.dtype == torch.float32 for tensor in tensors.values())


@pytest.mark.parametrize(("method", "param", "cap"), [
    ("sv_ratio", 4.0, 8), ("sv_ratio", 1.5, 8), ("sv_fro", 0.9, 8), ("sv_fro", 0.99, 8),
    ("sv_cumulative", 0.8, 8), ("sv_cumulative", 0.8, 3), ("sv_cumulative", 0.999, 8),
])
def test_each_dynamic_method_keeps_the_rank_of_its_formula(tmp_path, method, param, cap):
    source = spectrum_lora(tmp_path, SPECTRUM)
    result = resize_lora(source, tmp_path / "out.safetensors", ResizeTarget(cap, method=method, param=param))
    (module,) = result.modules
    assert module.new_rank == expected_rank(SPECTRUM, method, param, cap)
    assert module.alpha == pytest.approx(4.0 / 8 * module.new_rank)
    kept = SPECTRUM[:module.new_rank]
    assert module.fro_retained == pytest.approx(math.sqrt(sum(v * v for v in kept) / sum(v * v for v in SPECTRUM)))
    _, metadata = load_lora_file(result.path)
    assert metadata["ss_network_dim"] == metadata["ss_network_alpha"] == "Dynamic"
    assert metadata["ss_training_comment"].startswith(f"Dynamic resize with {method}: {param} from 8; ")


def test_an_all_zero_module_gets_rank_one(tmp_path):
    source = spectrum_lora(tmp_path, [0.0] * 4)
    (module,) = resize_lora(source, tmp_path / "z.safetensors", ResizeTarget(4, method="sv_fro", param=0.9)).modules
    assert module.new_rank == 1


def test_several_targets_from_the_original_text_files_are_named_by_method_and_value(tmp_path):
    source = spectrum_lora(tmp_path, SPECTRUM)
    (tmp_path / "fixed.txt").write_text("4\n2\n\n", encoding="utf-8")
    (tmp_path / "dynamic.txt").write_text("0.9 8\n0.8 2\n", encoding="utf-8")
    fixed = read_targets_file(tmp_path / "fixed.txt", method=None)
    dynamic = read_targets_file(tmp_path / "dynamic.txt", method="sv_fro")
    assert dynamic == [ResizeTarget(8, None, "sv_fro", 0.9), ResizeTarget(2, None, "sv_fro", 0.8)]
    results = resize_many([source], tmp_path / "out", fixed + dynamic, name="mine")
    assert [result.path.name for result in results] == [
        "mine-Fixed-4.safetensors", "mine-Fixed-2.safetensors", "mine-sv_fro-0.9-8.safetensors",
        "mine-sv_fro-0.8-2.safetensors"]
    with pytest.raises(UserFacingError, match="already exists"):
        resize_many([source], tmp_path / "out", fixed, name="mine")
    (tmp_path / "bad.txt").write_text("0.9\n", encoding="utf-8")
    with pytest.raises(UserFacingError, match="Line 1 of bad.txt"):
        read_targets_file(tmp_path / "bad.txt", method="sv_ratio")


def test_wrong_files_are_refused_in_one_sentence(tmp_path):
    loha = {"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a": torch.zeros(4, 2),
            "lora_unet_mid_block_attentions_0_proj_in.hada_w1_b": torch.zeros(2, 4)}
    checkpoint = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}
    for name, tensors, message in [("loha.safetensors", loha, "is a LoHa, which the resizer cannot read"),
                                   ("model.safetensors", checkpoint, "full Stable Diffusion checkpoint")]:
        save_lora(tensors, tmp_path / name)
        with pytest.raises(UserFacingError, match=message):
            resize_lora(tmp_path / name, tmp_path / f"out-{name}", ResizeTarget(2))
    source = spectrum_lora(tmp_path, SPECTRUM)
    with pytest.raises(UserFacingError, match="already exists"):
        resize_lora(source, source, ResizeTarget(2))


def test_merging_two_loras_of_enough_rank_reproduces_the_weighted_sum(tmp_path):
    first = random_lora(tmp_path, "a.safetensors", dim=4, alpha=2.0, conv_dim=2, seed=1)
    second = random_lora(tmp_path, "b.safetensors", dim=2, alpha=1.0, seed=2)
    merged = merge_loras([first, second], [0.7, -0.4], tmp_path / "m.safetensors", new_rank=6, new_conv_rank=2,
                         clamp_quantile=1.0)
    one, two, result = deltas(first), deltas(second), deltas(merged)
    assert result.keys() == one.keys() | two.keys()
    for name in result:
        expected = 0.7 * one[name] + (-0.4 * two[name] if name in two else 0)
        torch.testing.assert_close(result[name], expected, atol=2e-6, rtol=1e-4)
    tensors, metadata = load_lora_file(merged)
    assert all(float(tensors[f"{name}.alpha"]) == tensors[f"{name}.lora_down.weight"].shape[0] for name in result)
    assert metadata["ss_network_module"] == "networks.lora" and metadata["ss_network_dim"] == "6"

    clipped = deltas(merge_loras([first, second], [0.7, -0.4], tmp_path / "clipped.safetensors", new_rank=6))
    assert any(not torch.allclose(clipped[name], result[name]) for name in result)  # sd-scripts' 0.99 quantile


def test_concatenating_loras_is_exact_and_adds_the_ranks(tmp_path):
    first = random_lora(tmp_path, "a.safetensors", dim=4, alpha=2.0, conv_dim=2, seed=1)
    second = random_lora(tmp_path, "b.safetensors", dim=2, alpha=1.0, conv_dim=2, seed=2)
    for shuffle in (False, True):
        merged = concat_loras([first, second], [0.5, 2.0], tmp_path / f"c{shuffle}.safetensors", shuffle=shuffle)
        one, two, result = deltas(first), deltas(second), deltas(merged)
        for name in result:
            torch.testing.assert_close(result[name], 0.5 * one[name] + 2.0 * two[name], atol=1e-6, rtol=1e-5)
        tensors, _ = load_lora_file(merged)
        assert tensors[f"{MODULE}.lora_down.weight"].shape[0] == 6


def test_loras_for_different_models_are_not_merged(tmp_path):
    first = random_lora(tmp_path, "a.safetensors", dim=2, alpha=1.0)
    other = {f"{MODULE}.lora_down.weight": torch.zeros(2, 1024), f"{MODULE}.lora_up.weight": torch.zeros(64, 2)}
    save_lora(other, tmp_path / "sd2.safetensors")
    with pytest.raises(UserFacingError, match="made for different base models"):
        merge_loras([first, tmp_path / "sd2.safetensors"], [1, 1], tmp_path / "m.safetensors")
    with pytest.raises(UserFacingError, match="give one ratio per LoRA"):
        concat_loras([first], [1, 1], tmp_path / "m.safetensors")
