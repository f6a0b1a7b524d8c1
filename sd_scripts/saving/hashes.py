"""The hashes that LoRA readers and model browsers show, computed exactly as sd-scripts computes them.

- `sshs_model_hash` / `sshs_legacy_hash` (sd-webui-additional-networks): the LoRA is serialized in memory with
  only its `ss_*` metadata; the model hash is the sha256 of everything after the 8-byte length and the JSON header,
  the legacy hash the first 8 hex digits of the sha256 of the 64 KiB at offset 1 MiB of that buffer.
- `ss_sd_model_hash` (A1111's old model hash): first 8 hex digits of the sha256 of the 64 KiB at 1 MiB of the file;
  `ss_new_sd_model_hash`: the sha256 of the whole file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save as serialize_safetensors

LEGACY_HASH_OFFSET = 0x100000  # 1 MiB
LEGACY_HASH_LENGTH = 0x10000  # 64 KiB


def safetensors_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, str]:
    """{"sshs_model_hash": ..., "sshs_legacy_hash": ...} for a LoRA about to be written with `metadata`."""
    ss_metadata = {key: value for key, value in metadata.items() if key.startswith("ss_")}
    buffer = memoryview(serialize_safetensors(dict(tensors), ss_metadata))
    header_length = int.from_bytes(buffer[:8], "little")
    model_hash = hashlib.sha256(buffer[8 + header_length :]).hexdigest()
    legacy_hash = hashlib.sha256(buffer[LEGACY_HASH_OFFSET : LEGACY_HASH_OFFSET + LEGACY_HASH_LENGTH]).hexdigest()[:8]
    return {"sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash}


def legacy_model_hash(path: Path) -> str:
    """A1111's old 8-digit model hash (sha256 of the 64 KiB at offset 1 MiB)."""
    with path.open("rb") as handle:
        handle.seek(LEGACY_HASH_OFFSET)
        return hashlib.sha256(handle.read(LEGACY_HASH_LENGTH)).hexdigest()[:8]


def file_sha256(path: Path) -> str:
    """sha256 of a whole file, streamed so multi-GB models need no memory."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
