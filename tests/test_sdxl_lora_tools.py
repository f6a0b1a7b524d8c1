"""The LoRA tools on SDXL: resize and merge keep sd-scripts' SDXL names, a LoRA merged into the tiny SDXL single file
changes its SGM weights by exactly the LoRA's delta, extraction from the two SDXL files gives back that LoRA's names
and deltas, and merge_lycoris merges a LoHa into the SGM file; files of the other family are refused before loading.

Expected single-file names come from the format (network_tables.sgm_file_weight: A1111/ComfyUI's table), not from
our mapping.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from network_tables import sgm_file_weight, single_file_shapes
from sd_scripts.errors import UserFacingError
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.saving.lora_file import load_lora_file, save_lora
from tool_fixtures import deltas, one_thread  # noqa: F401  (autouse)

SDXL_METADATA = {"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0"}


@pytest.fixture(scope="module")
def sdxl_lora(tiny_sdxl, tmp_path_factory):
    """A rank-4 kohya LoRA with random weights on both text encoders and the U-Net of the tiny SDXL model."""
    network = LoRANetwork(tiny_sdxl.text_encoders, tiny_sdxl.unet, dim=4, alpha=2.0)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for lora in network.loras:
            lora.lora_up.weight.copy_(torch.randn(lora.lora_up.weight.shape, generator=generator) * 0.05)
    path = tmp_path_factory.mktemp("sdxl_tools") / "sdxl_lora.safetensors"
    kept = {key: tensor for key, tensor in network.state_dict().items()  # fewer SVDs: transformer block 0 of each
            if not re.search(r"_transformer_blocks_[1-9]", key) or "output_blocks_5_1_transformer_blocks_1_" in key}
    save_lora(kept, path, save_precision="float", metadata=SDXL_METADATA)
    return path


def sgm_weight(path, lora_name: str) -> torch.Tensor:
    """The single-file weight an SDXL U-Net LoRA name lands on in A1111/ComfyUI."""
    key, _ = sgm_file_weight(lora_name, single_file_shapes(path))
    with safe_open(str(path), framework="pt") as file:
        return file.get_tensor(key).float()


def sd_lora(path):
    """A one-module SD 1.x LoRA (diffusers names, lora_te_), enough for the family checks that read only names."""
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(1, 4),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(4, 1),
               "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(1, 4),
               "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(4, 1)}, str(path))
    return path


def test_resize_and_merge_keep_the_sdxl_names_and_refuse_mixing_families(sdxl_lora, tmp_path):
    from sd_scripts.tools.merge_lora import merge_loras
    from sd_scripts.tools.resize_lora import ResizeTarget, resize_lora

    resized = resize_lora(sdxl_lora, tmp_path / "resized.safetensors", ResizeTarget(2)).path
    tensors, metadata = load_lora_file(resized)
    original, _ = load_lora_file(sdxl_lora)
    assert set(tensors) == set(original) and metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert {tensor.shape[0] for key, tensor in tensors.items() if key.endswith("lora_down.weight")} == {2}
    merged = merge_loras([sdxl_lora, sdxl_lora], [0.25, 0.75], tmp_path / "merged.safetensors", new_rank=4,
                         clamp_quantile=1.0)
    expected, got = deltas(sdxl_lora), deltas(merged)
    assert set(got) == set(expected)
    for name, delta in expected.items():
        torch.testing.assert_close(got[name], delta, atol=1e-5, rtol=1e-4)
    with pytest.raises(UserFacingError, match="different model families \\(SDXL and SD 1.x/2.x\\)"):
        merge_loras([sdxl_lora, sd_lora(tmp_path / "sd.safetensors")], [1, 1], tmp_path / "mixed.safetensors")


def test_a_lora_merged_into_the_sdxl_file_and_extracted_back(tiny_sdxl_files, sdxl_lora, tmp_path):
    from sd_scripts.tools.extract_lora import ExtractTarget, extract_loras
    from sd_scripts.tools.merge_lora import merge_into_checkpoint

    single_file = tiny_sdxl_files[0]
    with pytest.raises(UserFacingError, match="was made for SD 1.x/2.x models but the base model is SDXL"):
        merge_into_checkpoint(single_file, [sd_lora(tmp_path / "sd.safetensors")], [1.0], tmp_path / "no.safetensors")
    merged = merge_into_checkpoint(single_file, [sdxl_lora], [1.0], tmp_path / "merged.safetensors")
    expected = deltas(sdxl_lora)
    for name in ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", "lora_unet_middle_block_1_proj_in",
                 "lora_unet_output_blocks_5_1_transformer_blocks_1_ff_net_2"):
        change = sgm_weight(merged, name) - sgm_weight(single_file, name)
        torch.testing.assert_close(change, expected[name], atol=1e-5, rtol=1e-4)
    with safe_open(str(merged), framework="pt") as file:
        assert file.metadata()["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    (extracted,) = extract_loras(single_file, merged, [(tmp_path / "extracted.safetensors", ExtractTarget(4))],
                                 clamp_quantile=1.0, min_diff=0.0)
    tensors, metadata = load_lora_file(extracted)
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0" and metadata["ss_v2"] == "False"
    got = deltas(extracted)
    assert set(expected) <= set(got)  # te1, te2 and SGM names, as the LoRA that was merged
    assert all(float(delta.abs().max()) < 1e-6 for name, delta in got.items() if name not in expected)
    for name in ("lora_te2_text_model_encoder_layers_1_self_attn_v_proj", "lora_unet_input_blocks_8_1_proj_out"):
        torch.testing.assert_close(got[name], expected[name], atol=1e-4, rtol=1e-3)


def test_merge_lycoris_merges_a_loha_into_the_sdxl_file(tiny_sdxl, tiny_sdxl_files, tmp_path):
    from sd_scripts.networks.base import NetworkSpec
    from sd_scripts.networks.factory import create_network
    from sd_scripts.networks.kinds import NETWORK_TYPES, parse_network_args
    from sd_scripts.tools.merge_lycoris import main

    options = parse_network_args("lycoris.kohya", ["algo=loha", "preset=attn-only"])
    network = create_network(NetworkSpec(NETWORK_TYPES["LoHa"], dim=2, alpha=1.0, options=options,
                                         train_text_encoder=False), tiny_sdxl.text_encoders, tiny_sdxl.unet)
    state = network.state_dict()
    generator = torch.Generator().manual_seed(2)
    state = {key: torch.randn(t.shape, generator=generator) * 0.2 if "hada" in key else t for key, t in state.items()}
    loha = tmp_path / "loha.safetensors"
    save_lora(state, loha, save_precision="float", metadata={"ss_network_module": "lycoris.kohya"})
    name = "lora_unet_output_blocks_0_1_transformer_blocks_9_attn1_to_v"
    w1 = state[f"{name}.hada_w1_a"] @ state[f"{name}.hada_w1_b"]
    w2 = state[f"{name}.hada_w2_a"] @ state[f"{name}.hada_w2_b"]
    expected = w1 * w2 * float(state[f"{name}.alpha"]) / 2 * 0.5  # LoHa: (w1a w1b) * (w2a w2b) * alpha / rank
    assert main([str(tiny_sdxl_files[0]), str(loha), str(tmp_path / "out.safetensors"), "--weight", "0.5"]) == 0
    change = sgm_weight(tmp_path / "out.safetensors", name) - sgm_weight(tiny_sdxl_files[0], name)
    torch.testing.assert_close(change, expected, atol=1e-5, rtol=1e-4)
