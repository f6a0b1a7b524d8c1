"""Text-encoder output caching (text encoders frozen): every caption encoded once, before training.

The text encoders can then leave the GPU for the whole run, and no step runs them. Outputs are kept in memory, or
in files next to each image:
- SDXL: sd-scripts' `<image stem>_te_outputs.npz` with its keys `hidden_state1`, `hidden_state2` (each encoder's
  penultimate states) and `pool2`. sd-scripts reuses any such file that has the three keys, even after the caption
  was edited; this trainer also writes the `caption` it encoded and the base model's file name, and reuses a file
  only when both match and the states have this run's token length, so a stale file is encoded again (and
  sd-scripts, which ignores extra keys, still reads ours).
- SD 1.x/2.x (which sd-scripts does not cache): `<image stem>_te_outputs_sd.npz` with `hidden_state` (the context
  the U-Net takes, after clip_skip), `caption`, `base_model` and `clip_skip`, reused on the same terms plus the same
  clip_skip.

Only captions that never change can be cached: `ensure_text_encoder_outputs_cacheable` checks every subset (a
dataset_config can turn on caption shuffling per folder), before the base model loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sd_scripts.dataset.latent_cache import read_npz_arrays, write_npz_atomically
from sd_scripts.dataset.plan import DatasetPlan
from sd_scripts.errors import UserFacingError

if TYPE_CHECKING:
    from torch import Tensor

SDXL_NPZ_SUFFIX = "_te_outputs.npz"  # sd-scripts' SdxlTextEncoderOutputsCachingStrategy
SD_NPZ_SUFFIX = "_te_outputs_sd.npz"
SDXL_STATE_KEYS = ("hidden_state1", "hidden_state2", "pool2")
SD_STATE_KEYS = ("hidden_state",)

# The states of a list of captions, one tensor [B, ...] per state key: SDXL (hidden_state1 [B, N, D1],
# hidden_state2 [B, N, D2], pool2 [B, P]); SD 1.x/2.x (hidden_state [B, N, D],)
EncodeCaptions = Callable[[list[str]], tuple["Tensor", ...]]


@dataclass
class TextEncoderCache:
    """The outputs of every image in use, by index into plan.images: arrays in memory, or the .npz that hold them."""

    state_keys: tuple[str, ...]
    in_memory: dict[int, tuple[np.ndarray, ...]] = field(default_factory=dict)
    on_disk: dict[int, Path] = field(default_factory=dict)

    def get(self, image_indices: list[int]) -> tuple[Tensor, ...]:
        """Each state of the images, stacked into a batch, float32 (the order of `state_keys`)."""
        import torch

        rows = [self.in_memory[index] if index in self.in_memory else _read(self.on_disk[index], self.state_keys)
                for index in image_indices]
        return tuple(torch.stack([torch.from_numpy(row[position]) for row in rows])
                     for position in range(len(self.state_keys)))


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


def te_outputs_npz_path(image_path: Path, sdxl: bool = True) -> Path:
    return image_path.with_name(image_path.stem + (SDXL_NPZ_SUFFIX if sdxl else SD_NPZ_SUFFIX))


def cache_text_encoder_outputs(
    plan: DatasetPlan, encode: EncodeCaptions, *, sdxl: bool, to_disk: bool, base_model: str, token_length: int,
    batch_size: int, clip_skip: int | None = None,
) -> TextEncoderCache:
    """Encode the caption of every image in use, `batch_size` at a time; `token_length` is N+2 (77, 152 or 227).
    `clip_skip` (SD 1.x/2.x) changes the states, so a file made with another is encoded again."""
    ensure_text_encoder_outputs_cacheable(plan)
    state_keys = SDXL_STATE_KEYS if sdxl else SD_STATE_KEYS
    made_with = {"base_model": base_model} if sdxl else {"base_model": base_model, "clip_skip": str(clip_skip)}
    cache = TextEncoderCache(state_keys)
    in_use = sorted({entry for dataset in plan.datasets for bucket in dataset.buckets for entry in bucket.entries})
    to_encode = []
    for index in in_use:
        path = te_outputs_npz_path(plan.images[index].path, sdxl)
        if to_disk and _is_valid(path, state_keys, {"caption": plan.images[index].caption, **made_with}, token_length):
            cache.on_disk[index] = path
        else:
            to_encode.append(index)
    for start in range(0, len(to_encode), batch_size):
        indices = to_encode[start : start + batch_size]
        captions = [plan.images[index].caption for index in indices]
        states = [tensor.float().cpu().numpy() for tensor in encode(captions)]
        for row, index in enumerate(indices):
            arrays = tuple(state[row].copy() for state in states)
            if to_disk:
                path = te_outputs_npz_path(plan.images[index].path, sdxl)
                values = {**dict(zip(state_keys, arrays)), "caption": np.array(captions[row]),
                          **{key: np.array(value) for key, value in made_with.items()}}
                write_npz_atomically(path, values)
                cache.on_disk[index] = path
            else:
                cache.in_memory[index] = arrays
    return cache


def _is_valid(path: Path, state_keys: tuple[str, ...], made_with: Mapping[str, str], token_length: int) -> bool:
    arrays = read_npz_arrays(path)
    return (all(key in arrays for key in (*state_keys, *made_with))
            and all(str(arrays[key]) == value for key, value in made_with.items())
            and arrays[state_keys[0]].shape[0] == token_length)


def _read(path: Path, state_keys: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    with np.load(path) as npz:
        return tuple(npz[key] for key in state_keys)
