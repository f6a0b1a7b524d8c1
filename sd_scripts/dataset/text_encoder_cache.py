"""Text-encoder output caching (SDXL with frozen text encoders): every caption encoded once, before training.

The text encoders can then leave the GPU for the whole run. Outputs are kept in memory, or in sd-scripts' SDXL files
`<image stem>_te_outputs.npz` next to each image with its keys `hidden_state1`, `hidden_state2` (each encoder's
penultimate states) and `pool2`. sd-scripts reuses any such file that has the three keys, even after the caption
was edited; this trainer also writes the `caption` it encoded and the base model's file name, and reuses a file only
when both match and the states have this run's token length, so a stale file is encoded again (and sd-scripts,
which ignores extra keys, still reads ours).

Only captions that never change can be cached: `ensure_text_encoder_outputs_cacheable` checks every subset (a
dataset_config can turn on caption shuffling per folder), before the base model loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sd_scripts.dataset.latent_cache import read_npz_arrays, write_npz_atomically
from sd_scripts.dataset.plan import DatasetPlan
from sd_scripts.errors import UserFacingError

if TYPE_CHECKING:
    from torch import Tensor

NPZ_SUFFIX = "_te_outputs.npz"  # sd-scripts' SdxlTextEncoderOutputsCachingStrategy
STATE_KEYS = ("hidden_state1", "hidden_state2", "pool2")

# (hidden_state1 [B, N, D1], hidden_state2 [B, N, D2], pool2 [B, P]) for a list of captions
EncodeCaptions = Callable[[list[str]], tuple["Tensor", "Tensor", "Tensor"]]


@dataclass
class TextEncoderCache:
    """The outputs of every image in use, by index into plan.images: arrays in memory, or the .npz that hold them."""

    in_memory: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    on_disk: dict[int, Path] = field(default_factory=dict)

    def get(self, image_indices: list[int]) -> tuple[Tensor, Tensor]:
        """SDXL's context [B, N, D1+D2] (both encoders' states side by side) and pooled embedding [B, P], float32."""
        import torch

        rows = [self.in_memory[index] if index in self.in_memory else _read(self.on_disk[index])
                for index in image_indices]
        context = torch.stack([torch.from_numpy(np.concatenate([first, second], axis=-1)) for first, second, _ in rows])
        pooled = torch.stack([torch.from_numpy(pool) for _, _, pool in rows])
        return context, pooled


def ensure_text_encoder_outputs_cacheable(plan: DatasetPlan) -> None:
    """sd-scripts' `is_text_encoder_output_cacheable`, per subset, plus caption_dropout_every_n_epochs (which would
    otherwise be ignored silently): one sentence naming the folder and the option."""
    for subset in plan.subsets:
        options = subset.options
        changing = [name for name, on in (
            ("shuffle_caption", options.shuffle_caption),
            ("caption_dropout_rate", options.caption_dropout_rate > 0),
            ("caption_dropout_every_n_epochs", options.caption_dropout_every_n_epochs > 0),
            ("caption_tag_dropout_rate", options.caption_tag_dropout_rate > 0),
            ("token_warmup_step", options.token_warmup_step > 0),
        ) if on]
        if changing:
            raise UserFacingError(f"Text-encoder outputs cannot be cached while {', '.join(changing)} changes the "
                                  f"captions of {subset.image_dir} from step to step; turn that off or turn the "
                                  "caching off.")


def te_outputs_npz_path(image_path: Path) -> Path:
    return image_path.with_name(image_path.stem + NPZ_SUFFIX)


def cache_text_encoder_outputs(
    plan: DatasetPlan, encode: EncodeCaptions, *, to_disk: bool, base_model: str, token_length: int, batch_size: int
) -> TextEncoderCache:
    """Encode the caption of every image in use, `batch_size` at a time; `token_length` is N+2 (77, 152 or 227)."""
    ensure_text_encoder_outputs_cacheable(plan)
    cache = TextEncoderCache()
    in_use = sorted({entry for dataset in plan.datasets for bucket in dataset.buckets for entry in bucket.entries})
    to_encode = []
    for index in in_use:
        path = te_outputs_npz_path(plan.images[index].path)
        if to_disk and _is_valid(path, plan.images[index].caption, base_model, token_length):
            cache.on_disk[index] = path
        else:
            to_encode.append(index)
    for start in range(0, len(to_encode), batch_size):
        indices = to_encode[start : start + batch_size]
        captions = [plan.images[index].caption for index in indices]
        states1, states2, pooled = (tensor.float().cpu().numpy() for tensor in encode(captions))
        for row, index in enumerate(indices):
            arrays = (states1[row].copy(), states2[row].copy(), pooled[row].copy())
            if to_disk:
                path = te_outputs_npz_path(plan.images[index].path)
                values = dict(zip(STATE_KEYS, arrays), caption=np.array(captions[row]), base_model=np.array(base_model))
                write_npz_atomically(path, values)
                cache.on_disk[index] = path
            else:
                cache.in_memory[index] = arrays
    return cache


def _is_valid(path: Path, caption: str, base_model: str, token_length: int) -> bool:
    arrays = read_npz_arrays(path)
    return (all(key in arrays for key in (*STATE_KEYS, "caption", "base_model"))
            and str(arrays["caption"]) == caption and str(arrays["base_model"]) == base_model
            and arrays["hidden_state1"].shape[0] == token_length)


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path) as npz:
        return tuple(npz[key] for key in STATE_KEYS)  # type: ignore[return-value]
