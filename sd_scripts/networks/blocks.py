"""sd-scripts' numbering of the SD1/SD2 U-Net into 25 blocks, and the per-block values kohya's LoRA reads from its
network_args: learning-rate weights (`down_lr_weight`, `mid_lr_weight`, `up_lr_weight`, `block_lr_zero_threshold`)
and ranks (`block_dims`, `block_alphas`, `conv_block_dims`, `conv_block_alphas`).

The numbering is the original LDM one (`input_blocks_N`, `middle_block`, `output_blocks_N`) found from the diffusers
names in the LoRA keys: `down_blocks_i_(resnets|attentions)_j` is down block 1 + 3i + j, a downsampler 1 + 3i + 2;
`up_blocks_i_...` likewise 13 + 3i + j (an upsampler shares 13 + 3i + 2 with the level's last resnet); anything in
`mid_block_` is 12. The 25 values of every per-block list are the 12 down, the middle, the 12 up in this order.

| index | diffusers layers (SD1/SD2)                              | LDM name           | LoRA (linear) | LoCon adds   |
|-------|---------------------------------------------------------|--------------------|---------------|--------------|
| 0     | none (`conv_in`, never a target)                        | input_blocks_0     | -             | -            |
| 1, 2  | down_blocks_0 resnets_0/1 + attentions_0/1              | input_blocks_1, 2  | attention     | resnet       |
| 3     | down_blocks_0 downsamplers_0                            | input_blocks_3     | -             | downsampler  |
| 4, 5  | down_blocks_1 resnets_0/1 + attentions_0/1              | input_blocks_4, 5  | attention     | resnet       |
| 6     | down_blocks_1 downsamplers_0                            | input_blocks_6     | -             | downsampler  |
| 7, 8  | down_blocks_2 resnets_0/1 + attentions_0/1              | input_blocks_7, 8  | attention     | resnet       |
| 9     | down_blocks_2 downsamplers_0                            | input_blocks_9     | -             | downsampler  |
| 10, 11| down_blocks_3 resnets_0/1 (no attention)                | input_blocks_10, 11| -             | resnet       |
| 12    | mid_block attentions_0, resnets_0/1                     | middle_block       | attention     | resnets      |
| 13-15 | up_blocks_0 resnets_0..2 (no attention), upsampler in 15| output_blocks_0-2  | -             | resnet (+up) |
| 16-18 | up_blocks_1 resnets_0..2 + attentions_0..2, upsampler 18| output_blocks_3-5  | attention     | resnet (+up) |
| 19-21 | up_blocks_2 resnets_0..2 + attentions_0..2, upsampler 21| output_blocks_6-8  | attention     | resnet (+up) |
| 22-24 | up_blocks_3 resnets_0..2 + attentions_0..2              | output_blocks_9-11 | attention     | resnet       |

So `down_lr_weight`'s first value (block 0) steers no layer, and a plain LoRA has layers only in blocks 1, 2, 4, 5,
7, 8, 12 and 16-24. Text-encoder names have no block (`block_index` is None): per-block values never touch them.

As in sd-scripts, the per-block ranks are used only when `block_dims` or a learning-rate weight is given, and a block
whose learning-rate weight is 0 (or at most the threshold) gets no LoRA module at all, linear or conv. sd-scripts
silently ignores `block_alphas` / `conv_block_dims` / `conv_block_alphas` given without those; we refuse them instead,
so a setting never has no effect unnoticed. Torch-free: the wizard may read it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.kinds import BLOCKS_PER_SIDE, NUM_BLOCKS

MID_BLOCK = BLOCKS_PER_SIDE  # 12: after the 12 down blocks (0-11), before the 12 up blocks (13-24)
_UP_DOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|attentions|downsamplers|upsamplers)_(\d+)_")
_LR_WEIGHT_OPTIONS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight")


def block_index(lora_name: str) -> int | None:
    """The block (0-24) of a kohya LoRA name as sd-scripts numbers it, None for a name outside the U-Net blocks."""
    match = _UP_DOWN.search(lora_name)
    if match:
        side, level, part, number = match.groups()
        position = 3 * int(level) + (2 if part.endswith("samplers") else int(number))
        return 1 + position if side == "down" else MID_BLOCK + 1 + position
    if "mid_block_" in lora_name:
        return MID_BLOCK
    return None


def preset_weights(text: str) -> tuple[float, ...]:
    """The 12 weights of a preset word with an optional "+base" added to each ("cosine+.25").

    Over the 12 blocks of a side, i = 0..11: sine rises sin(pi/2 * i/11) from 0 to 1, cosine is sine reversed
    (1 down to 0), linear rises i/11, reverse_linear falls, zeros is 0 everywhere.
    """
    word, plus, base_text = (part.strip() for part in text.partition("+"))
    try:
        base = float(base_text) if plus else 0.0
    except ValueError:
        raise UserFacingError(f"The block weight preset '{text}' is not valid; write a preset word with an optional "
                              "+number, e.g. cosine+.25.") from None
    last = BLOCKS_PER_SIDE - 1
    sine = [math.sin(math.pi * (i / last) / 2) for i in range(BLOCKS_PER_SIDE)]
    line = [i / last for i in range(BLOCKS_PER_SIDE)]
    curves = {"sine": sine, "cosine": sine[::-1], "linear": line, "reverse_linear": line[::-1],
              "zeros": [0.0] * BLOCKS_PER_SIDE}
    if word not in curves:
        raise UserFacingError(f"The block weight preset '{word}' is not known; use one of {', '.join(curves)}.")
    return tuple(value + base for value in curves[word])


def block_lr_weights(options: Mapping[str, object]) -> tuple[float, ...] | None:
    """The 25 learning-rate multipliers of the U-Net blocks, None when no weight option is given.

    A side or middle not given is 1.0; every weight given that is not above `block_lr_zero_threshold` (default 0)
    becomes 0, so that block is dropped (sd-scripts thresholds only the values given, not the defaults).
    """
    if all(options.get(name) is None for name in _LR_WEIGHT_OPTIONS):
        return None
    threshold = float(options.get("block_lr_zero_threshold") or 0.0)

    def weights(name: str, count: int) -> list[float]:
        value = options.get(name)
        if value is None:
            return [1.0] * count
        if isinstance(value, str):
            value = preset_weights(value)
        values = value if isinstance(value, Sequence) else [value]  # mid_lr_weight is one number
        return [float(v) if v > threshold else 0.0 for v in values]

    return tuple(weights("down_lr_weight", BLOCKS_PER_SIDE) + weights("mid_lr_weight", 1)
                 + weights("up_lr_weight", BLOCKS_PER_SIDE))


@dataclass(frozen=True)
class BlockRanks:
    """(dim, alpha) of each of the 25 blocks for Linear / 1x1-conv layers and for 3x3 convs (None: no conv LoRA).

    An alpha of None means alpha = rank, as everywhere in our LoRA.
    """

    dims: tuple[int, ...]
    alphas: tuple[float | None, ...]
    conv_dims: tuple[int, ...] | None = None
    conv_alphas: tuple[float | None, ...] | None = None

    def rank_of(self, block: int, *, conv: bool) -> tuple[int, float | None] | None:
        """(rank, alpha) for a layer of `block`, None where that block gets no LoRA of this kind (dim 0)."""
        dims, alphas = (self.conv_dims, self.conv_alphas) if conv else (self.dims, self.alphas)
        if dims is None or alphas is None or dims[block] == 0:
            return None
        return dims[block], alphas[block]


def block_ranks(
    options: Mapping[str, object],
    *,
    dim: int,
    alpha: float | None,
    conv_dim: int | None,
    conv_alpha: float | None,
) -> BlockRanks | None:
    """Each block's ranks as sd-scripts sets them, or None when the network has one dim for all.

    Per-block ranks are on when `block_dims` or a learning-rate weight is given. Missing lists default as in
    sd-scripts: `block_dims` to `dim`, `block_alphas` to `alpha` (not to the block's dim), `conv_block_dims` to
    `conv_dim` (no conv LoRA without either), `conv_block_alphas` to `conv_alpha`, else 1. Blocks whose
    learning-rate weight is 0 get dim 0 and conv dim 0.
    """
    lr_weights = block_lr_weights(options)
    if options.get("block_dims") is None and lr_weights is None:
        for name in ("block_alphas", "conv_block_dims", "conv_block_alphas"):
            if options.get(name) is not None:
                raise UserFacingError(f"{name} takes effect only together with block_dims or the block weights "
                                      "(down_lr_weight, mid_lr_weight, up_lr_weight); "
                                      f"add block_dims or remove {name}.")
        return None
    dims = list(_values(options, "block_dims", dim))
    alphas = _values(options, "block_alphas", alpha)
    if options.get("conv_block_dims") is not None:
        conv_dims: list[int] | None = list(_values(options, "conv_block_dims", 0))
        conv_alphas = _values(options, "conv_block_alphas", 1.0 if conv_alpha is None else conv_alpha)
    elif options.get("conv_block_alphas") is not None:
        raise UserFacingError("conv_block_alphas takes effect only together with conv_block_dims; add conv_block_dims "
                              "or remove conv_block_alphas.")
    elif conv_dim is not None:
        conv_dims, conv_alphas = [conv_dim] * NUM_BLOCKS, (conv_alpha,) * NUM_BLOCKS
    else:
        conv_dims, conv_alphas = None, None
    for name, values in (("block_dims", dims), ("conv_block_dims", conv_dims)):
        if values is not None and any(value < 0 for value in values):
            raise UserFacingError(f"{name} has a negative dim; use 0 (no LoRA in that block) or more.")
    if lr_weights is not None:
        for block, weight in enumerate(lr_weights):
            if weight == 0:
                dims[block] = 0
                if conv_dims is not None:
                    conv_dims[block] = 0
    return BlockRanks(tuple(dims), tuple(alphas), None if conv_dims is None else tuple(conv_dims),
                      None if conv_alphas is None else tuple(conv_alphas))


def _values(options: Mapping[str, object], name: str, default: object) -> tuple:
    """The 25 values of a per-block option, or the default repeated 25 times."""
    value = options.get(name)
    if value is None:
        return (default,) * NUM_BLOCKS
    values = tuple(value)
    if len(values) != NUM_BLOCKS:
        raise UserFacingError(f"{name} needs {NUM_BLOCKS} comma-separated values (12 down, middle, 12 up).")
    return values
