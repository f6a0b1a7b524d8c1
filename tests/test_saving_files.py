"""LoRA files on disk: formats, precisions, mode 0644, atomic writes, no silent overwrite, sshs_* hashes, safe reading."""

import hashlib
import json
import os
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as serialize

from sd_scripts.errors import UserFacingError
from sd_scripts.saving import load_lora_file, save_lora
from sd_scripts.saving.atomic import write_atomically
from sd_scripts.saving.hashes import file_sha256, legacy_model_hash


def small_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    name = "lora_unet_mid_block_attentions_0_proj_in"
    return {
        f"{name}.lora_down.weight": torch.randn(4, 32, 1, 1),
        f"{name}.lora_up.weight": torch.randn(32, 4, 1, 1),
        f"{name}.alpha": torch.tensor(2.0),
    }


def big_state_dict() -> dict[str, torch.Tensor]:
    """Over 1 MiB, so the legacy hash window (64 KiB at 1 MiB) holds real tensor bytes."""
    torch.manual_seed(1)
    name = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    return {
        f"{name}.lora_down.weight": torch.randn(256, 2048),
        f"{name}.lora_up.weight": torch.randn(2048, 256),
        f"{name}.alpha": torch.tensor(64.0),
    }


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_safetensors_keeps_tensors_and_metadata_with_mode_0644(tmp_path):
    state_dict = small_state_dict()
    path = save_lora(state_dict, tmp_path / "a.safetensors", metadata={"ss_network_dim": "4", "modelspec.title": "a"})
    tensors, metadata = load_lora_file(path)
    assert tensors.keys() == state_dict.keys()
    assert all(torch.equal(tensors[key], state_dict[key]) for key in state_dict)
    assert tensors["lora_unet_mid_block_attentions_0_proj_in.alpha"].shape == ()
    assert metadata["ss_network_dim"] == "4" and metadata["modelspec.title"] == "a"
    assert {"sshs_model_hash", "sshs_legacy_hash"} <= metadata.keys()
    assert mode_of(path) == 0o644
    assert os.listdir(tmp_path) == ["a.safetensors"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [(None, torch.float32), ("float", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)],
)
def test_every_tensor_alpha_included_gets_the_save_precision(tmp_path, precision, dtype):
    path = save_lora(small_state_dict(), tmp_path / "a.safetensors", save_precision=precision)
    tensors, _ = load_lora_file(path)
    assert {tensor.dtype for tensor in tensors.values()} == {dtype}
    assert float(tensors["lora_unet_mid_block_attentions_0_proj_in.alpha"]) == 2.0


@pytest.mark.parametrize("file_format", ["ckpt", "pt"])
def test_ckpt_and_pt_are_plain_state_dicts_without_metadata(tmp_path, file_format):
    state_dict = small_state_dict()
    path = save_lora(
        state_dict, tmp_path / f"a.{file_format}", save_model_as=file_format, save_precision="fp16",
        metadata={"ss_network_dim": "4"},
    )
    loaded = torch.load(path, weights_only=True)
    assert loaded.keys() == state_dict.keys()
    assert all(tensor.dtype == torch.float16 for tensor in loaded.values())
    assert load_lora_file(path)[1] == {}
    assert mode_of(path) == 0o644


def test_an_existing_file_is_replaced_only_when_asked(tmp_path):
    path = tmp_path / "mine.safetensors"
    path.write_bytes(b"the user's own file")
    with pytest.raises(UserFacingError, match="already exists"):
        save_lora(small_state_dict(), path)
    assert path.read_bytes() == b"the user's own file"
    save_lora(small_state_dict(), path, overwrite=True)
    assert set(load_lora_file(path)[0]) == set(small_state_dict())


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.safetensors"
    path.write_bytes(b"old")

    def write_half_then_fail(temporary):
        temporary.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomically(path, write_half_then_fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.safetensors"]


def test_unwritable_destination_is_explained(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_bytes(b"")
    with pytest.raises(UserFacingError, match="could not be written"):
        save_lora(small_state_dict(), blocker / "a.safetensors")


def test_wrong_format_or_precision_is_explained(tmp_path):
    with pytest.raises(UserFacingError, match="not a LoRA file format"):
        save_lora(small_state_dict(), tmp_path / "a.bin", save_model_as="bin")
    with pytest.raises(UserFacingError, match="not a save precision"):
        save_lora(small_state_dict(), tmp_path / "a.safetensors", save_precision="fp8")


def test_sshs_hashes_match_an_independent_computation(tmp_path):
    state_dict = big_state_dict()
    metadata = {"ss_network_dim": "128", "ss_tag_frequency": json.dumps({"5_cat": {"cat": 3}}), "modelspec.title": "x"}
    path = save_lora(state_dict, tmp_path / "big.safetensors", save_precision="fp16", metadata=metadata)
    with safe_open(path, framework="pt") as handle:
        written = handle.metadata()
    raw = path.read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    # the model hash covers the tensor bytes only, so the file on disk (more metadata) has the same data section
    assert written["sshs_model_hash"] == hashlib.sha256(raw[8 + header_length :]).hexdigest()

    # the legacy hash is taken over a serialization that carries only the ss_* metadata
    fp16 = {key: value.half() for key, value in state_dict.items()}
    ss_only = serialize(fp16, {key: value for key, value in metadata.items() if key.startswith("ss_")})
    assert len(ss_only) > 0x110000
    assert written["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]
    assert written["sshs_legacy_hash"] != hashlib.sha256(b"").hexdigest()[:8]


def test_model_file_hashes(tmp_path):
    data = os.urandom(3 * 1024 * 1024)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert legacy_model_hash(path) == hashlib.sha256(data[1024 * 1024 : 1024 * 1024 + 65536]).hexdigest()[:8]
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


class NotATensor:
    pass


def test_reading_never_runs_code_and_explains_bad_files(tmp_path):
    pickled = tmp_path / "evil.ckpt"
    torch.save({"lora_unet_x.alpha": NotATensor()}, pickled)
    with pytest.raises(UserFacingError, match="evil.ckpt contains code, not only weights"):
        load_lora_file(pickled)
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(UserFacingError, match="not a readable safetensors file"):
        load_lora_file(garbage)
    with pytest.raises(UserFacingError, match="does not exist"):
        load_lora_file(tmp_path / "missing.safetensors")
