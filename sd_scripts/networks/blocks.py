"""sd-scripts' numbering of the U-Net into blocks, and the per-block values kohya's LoRA reads from its
network_args: learning-rate weights (`down_lr_weight`, `mid_lr_weight`, `up_lr_weight`, `block_lr_zero_threshold`)
and ranks (`block_dims`, `block_alphas`, `conv_block_dims`, `conv_block_alphas`). How many values each takes is
`kinds.block_counts(is_sdxl)`.

SD1/SD2: 25 blocks, numbered the original LDM way (`input_blocks_N`, `middle_block`, `output_blocks_N`) found from
the diffusers names in the LoRA keys: `down_blocks_i_(resnets|attentions)_j` is down block 1 + 3i + j, a downsampler
1 + 3i + 2; `up_blocks_i_...` likewise 13 + 3i + j (an upsampler shares 13 + 3i + 2 with the level's last resnet);
anything in `mid_block_` is 12. The 25 values of every per-block list are the 12 down, the middle, the 12 up in
this order.

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
7, 8, 12 and 16-24.

SDXL (sd-scripts' `get_block_index` with is_sdxl): the keys already carry the SGM names, and the 23 blocks are
0 base (`time_embed`, `label_emb`), 1 + N for `input_blocks_N` (N = 0..8), 10 + N for `middle_block_N` (resnet,
transformer, resnet), 13 + N for `output_blocks_N`, 22 out. `down_lr_weight` and `up_lr_weight` take 9 values,
`mid_lr_weight` 3, and the 23-value lists put one value for base before and one for out after them; the learning
rate weight of base and out is always 1. Base, out and input_blocks_0 (`conv_in`) never hold a kohya LoRA; a plain
LoRA has layers in blocks 5, 6, 8, 9 (input_blocks_4, 5, 7, 8), 11 (middle_block_1) and 13-18 (output_blocks_0-5).

Text-encoder names have no block (`block_index` is None): per-block values never touch them.

As in sd-scripts, the per-block ranks are used only when `block_dims` or a learning-rate weight is given, and a block
whose learning-rate weight is 0 (or at most the threshold) gets no LoRA module at all, linear or conv. sd-scripts
silently ignores `block_alphas` / `conv_block_dims` / `conv_block_alphas` given without those; we refuse them instead,
so a setting never has no effect unnoticed. sd-scripts also pads a too-short weight list with 1 and cuts a too-long
one; we refuse a list of the other family's length in one sentence. Torch-free: the wizard may read it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.kinds import SD_BLOCK_COUNTS, SDXL_BLOCK_COUNTS, BlockCounts, block_counts

MID_BLOCK = SD_BLOCK_COUNTS.per_side  # 12: after the 12 down blocks (0-11), before the 12 up blocks (13-24)
_UP_DOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|attentions|downsamplers|upsamplers)_(\d+)_")
# SDXL: (start of the SGM name, first block of that part), numbered as sd-scripts' get_block_index with is_sdxl
_SGM_PARTS = re.compile(r"lora_unet_(input_blocks|middle_block|output_blocks)_(\d+)_")
_SGM_FIRST_BLOCK = {"input_blocks": 1, "middle_block": 1 + SDXL_BLOCK_COUNTS.per_side,
                    "output_blocks": 1 + SDXL_BLOCK_COUNTS.per_side + SDXL_BLOCK_COUNTS.middle}
_SGM_EDGES = {"lora_unet_time_embed_": 0, "lora_unet_label_emb_": 0, "lora_unet_out_": SDXL_BLOCK_COUNTS.total - 1}
_LR_WEIGHT_OPTIONS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight")
_LIST_OPTIONS = _LR_WEIGHT_OPTIONS + ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
_SDXL_LENGTHS = {SDXL_BLOCK_COUNTS.per_side, SDXL_BLOCK_COUNTS.middle, SDXL_BLOCK_COUNTS.total}


def block_index(lora_name: str) -> int | None:
    """The block of a kohya LoRA name as sd-scripts numbers it (SD1/SD2 0-24 from diffusers names, SDXL 0-22 from
    SGM names), None for a name outside the U-Net blocks."""
    match = _UP_DOWN.search(lora_name)
    if match:
        side, level, part, number = match.groups()
        position = 3 * int(level) + (2 if part.endswith("samplers") else int(number))
        return 1 + position if side == "down" else MID_BLOCK + 1 + position
    if "mid_block_" in lora_name:
        return MID_BLOCK
    match = _SGM_PARTS.match(lora_name)
    if match:
        return _SGM_FIRST_BLOCK[match.group(1)] + int(match.group(2))
    return next((block for start, block in _SGM_EDGES.items() if lora_name.startswith(start)), None)


def preset_weights(text: str, count: int = SD_BLOCK_COUNTS.per_side) -> tuple[float, ...]:
    """The `count` weights (12, SDXL 9) of a preset word with an optional "+base" added to each ("cosine+.25").

    Over the blocks of a side, i = 0..count-1: sine rises sin(pi/2 * i/(count-1)) from 0 to 1, cosine is sine
    reversed (1 down to 0), linear rises i/(count-1), reverse_linear falls, zeros is 0 everywhere.
    """
    word, plus, base_text = (part.strip() for part in text.partition("+"))
    try:
        base = float(base_text) if plus else 0.0
    except ValueError:
        raise UserFacingError(f"The block weight preset '{text}' is not valid; write a preset word with an optional "
                              "+number, e.g. cosine+.25.") from None
    last = count - 1
    sine = [math.sin(math.pi * (i / last) / 2) for i in range(count)]
    line = [i / last for i in range(count)]
    curves = {"sine": sine, "cosine": sine[::-1], "linear": line, "reverse_linear": line[::-1],
              "zeros": [0.0] * count}
    if word not in curves:
        raise UserFacingError(f"The block weight preset '{word}' is not known; use one of {', '.join(curves)}.")
    return tuple(value + base for value in curves[word])


def read_as_sdxl(options: Mapping[str, object], is_sdxl: bool | None) -> bool:
    """Whether the per-block lists are read with SDXL's counts: the model's family when known; before the model is
    known (None), the family whose counts the given lists have (SDXL's 9/3/23 are none of SD's 12/1/25), so that the
    lists are checked against one family now and against the model's when the network is built."""
    if is_sdxl is not None:
        return is_sdxl
    return any(isinstance(value, (tuple, list)) and len(value) in _SDXL_LENGTHS
               for value in (options.get(name) for name in _LIST_OPTIONS))


def block_lr_weights(options: Mapping[str, object], *, is_sdxl: bool | None = None) -> tuple[float, ...] | None:
    """The learning-rate multipliers of the U-Net blocks (25, SDXL 23), None when no weight option is given.

    A side or middle not given is 1.0; every weight given that is not above `block_lr_zero_threshold` (default 0)
    becomes 0, so that block is dropped (sd-scripts thresholds only the values given, not the defaults). SDXL's base
    and out blocks always have weight 1, as in sd-scripts. `is_sdxl` None: see `read_as_sdxl`.
    """
    if all(options.get(name) is None for name in _LR_WEIGHT_OPTIONS):
        return None
    is_sdxl = read_as_sdxl(options, is_sdxl)
    counts = block_counts(is_sdxl)
    threshold = float(options.get("block_lr_zero_threshold") or 0.0)

    def weights(name: str, count: int) -> list[float]:
        value = options.get(name)
        if value is None:
            return [1.0] * count
        if isinstance(value, str):
            value = preset_weights(value, count)
        values = value if isinstance(value, Sequence) else [value]  # SD's mid_lr_weight is one number
        if len(values) != count:
            family = "SDXL" if is_sdxl else "SD 1.x/2.x"
            raise UserFacingError(f"For {family} models {name} takes {count} comma-separated value"
                                  f"{'s' if count > 1 else ''}, not {len(values)}; give {count}.")
        return [float(v) if v > threshold else 0.0 for v in values]

    edge = [1.0] * (counts.edges // 2)
    return tuple(edge + weights("down_lr_weight", counts.per_side) + weights("mid_lr_weight", counts.middle)
                 + weights("up_lr_weight", counts.per_side) + edge)


@dataclass(frozen=True)
class BlockRanks:
    """(dim, alpha) of each block (25, SDXL 23) for Linear / 1x1-conv layers and for 3x3 convs (None: no conv LoRA).

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
    is_sdxl: bool | None = None,
) -> BlockRanks | None:
    """Each block's ranks as sd-scripts sets them, or None when the network has one dim for all.

    Per-block ranks are on when `block_dims` or a learning-rate weight is given. Missing lists default as in
    sd-scripts: `block_dims` to `dim`, `block_alphas` to `alpha` (not to the block's dim), `conv_block_dims` to
    `conv_dim` (no conv LoRA without either), `conv_block_alphas` to `conv_alpha`, else 1. Blocks whose
    learning-rate weight is 0 get dim 0 and conv dim 0. `is_sdxl` None (the model not known yet): see `read_as_sdxl`.
    """
    is_sdxl = read_as_sdxl(options, is_sdxl)
    counts = block_counts(is_sdxl)
    lr_weights = block_lr_weights(options, is_sdxl=is_sdxl)
    if options.get("block_dims") is None and lr_weights is None:
        for name in ("block_alphas", "conv_block_dims", "conv_block_alphas"):
            if options.get(name) is not None:
                raise UserFacingError(f"{name} takes effect only together with block_dims or the block weights "
                                      "(down_lr_weight, mid_lr_weight, up_lr_weight); "
                                      f"add block_dims or remove {name}.")
        return None
    dims = list(_values(options, "block_dims", dim, counts))
    alphas = _values(options, "block_alphas", alpha, counts)
    if options.get("conv_block_dims") is not None:
        conv_dims: list[int] | None = list(_values(options, "conv_block_dims", 0, counts))
        conv_alphas = _values(options, "conv_block_alphas", 1.0 if conv_alpha is None else conv_alpha, counts)
    elif options.get("conv_block_alphas") is not None:
        raise UserFacingError("conv_block_alphas takes effect only together with conv_block_dims; add conv_block_dims "
                              "or remove conv_block_alphas.")
    elif conv_dim is not None:
        conv_dims, conv_alphas = [conv_dim] * counts.total, (conv_alpha,) * counts.total
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


def _values(options: Mapping[str, object], name: str, default: object, counts: BlockCounts) -> tuple:
    """The values of a per-block option (one per block), or the default repeated for every block."""
    value = options.get(name)
    if value is None:
        return (default,) * counts.total
    values = tuple(value)
    if len(values) != counts.total:
        raise UserFacingError(f"{name} needs {counts.total} comma-separated values for this model "
                              f"({counts.layout}), not {len(values)}.")
    return values
