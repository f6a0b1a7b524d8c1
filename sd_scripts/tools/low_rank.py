"""The SVD maths the LoRA tools share: a module's weight difference, its best low-rank factors, and the rank
each of sd-scripts' and LyCORIS' rank rules keeps.

Rank rules, on the singular values S (descending) of a module's weight difference:

* sd-scripts' `resize_lora.py` (`--dynamic_method`, `--new_rank` is the cap): `sv_ratio` t keeps the values above
  S[0]/t; `sv_cumulative` p keeps up to the first value where cumsum(S)/sum(S) reaches p; `sv_fro` p the same on
  S^2 against p^2; each index is clamped to [0, len(S)-1] and the rank is index + 1, then capped; a module whose
  S[0] <= 1e-6 (all zero) gets rank 1.
* LyCORIS' `extract_locon.py` (`--mode`): `threshold` t keeps #{S > t}, `ratio` t keeps #{S > t*S[0]},
  `quantile` q keeps #{cumsum(S) < q*sum(S)}; then rank = max(1, min(rank, out, in)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_SINGULAR_VALUE = 1e-6  # sd-scripts' MIN_SV: below it a module is all zero
DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")
EXTRACT_MODES = ("fixed", "threshold", "ratio", "quantile")


@dataclass(frozen=True)
class Factors:
    """delta W ~= up @ down (flattened) with alpha = `alpha`: the kohya LoRA tensors of one module."""

    down: torch.Tensor  # [rank, in] or [rank, in, k, k]
    up: torch.Tensor  # [out, rank] or [out, rank, 1, 1]
    alpha: float
    rank: int
    sum_retained: float  # sum(S[:rank]) / sum(S)
    fro_retained: float  # ||S[:rank]|| / ||S||: the share of the Frobenius norm kept
    max_ratio: float  # S[0] / S[rank-1]


def lora_delta(down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """up @ down as a 2-D float32 matrix [out, in*k*k] (alpha not applied), for linear, 1x1 and 3x3 modules."""
    return up.float().flatten(1) @ down.float().flatten(1)


def dynamic_rank(singular_values: torch.Tensor, method: str | None, param: float | None, cap: int) -> int:
    """The rank sd-scripts' resize_lora.py keeps for `method` (None: fixed at `cap`), its minimum and cap included."""
    values = singular_values.float()
    last = len(values) - 1
    if method is None:
        rank = cap
    elif method == "sv_ratio":
        rank = _clamp(int(torch.sum(values > values[0] / param)) - 1, last) + 1
    elif method == "sv_cumulative":
        rank = _clamp(int(torch.searchsorted(torch.cumsum(values, 0) / values.sum(), param)), last) + 1
    elif method == "sv_fro":
        squares = values.pow(2)
        rank = _clamp(int(torch.searchsorted(torch.cumsum(squares, 0) / squares.sum(), param**2)), last) + 1
    else:
        raise ValueError(f"unknown dynamic method {method!r}")
    if values[0] <= MIN_SINGULAR_VALUE:
        return 1
    return min(rank, cap, len(values))


def extract_rank(singular_values: torch.Tensor, mode: str, param: float, out_dim: int, in_dim: int) -> int:
    """The rank LyCORIS' extract_locon.py keeps for `mode`; for "fixed", `param` is the rank."""
    values = singular_values.float()
    if mode == "fixed":
        rank = int(param)
    elif mode == "threshold":
        rank = int(torch.sum(values > param))
    elif mode == "ratio":
        rank = int(torch.sum(values > param * values[0]))
    elif mode == "quantile":
        rank = int(torch.sum(torch.cumsum(values, 0) < param * values.sum()))
    else:
        raise ValueError(f"unknown extraction mode {mode!r}")
    return max(1, min(rank, out_dim, in_dim))


def svd(matrix: torch.Tensor, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float32 on `device` (full_matrices=False: only the min(out, in) directions a rank can use)."""
    return torch.linalg.svd(matrix.to(device, torch.float32), full_matrices=False)


def factorize(
    delta: torch.Tensor,
    rank: int,
    *,
    weight_shape: torch.Size,
    alpha: float,
    decomposition: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    clamp_quantile: float | None = None,
) -> Factors:
    """The rank-`rank` factors of `delta` (2-D), shaped for a module whose weight is `weight_shape`.

    up = U S, down = Vh, as sd-scripts writes them, so up @ down is the best rank-`rank` approximation of `delta`;
    the caller's `alpha` then sets the scale alpha/rank the file stores. `clamp_quantile` (sd-scripts' extract and
    svd-merge) clips both factors to +-that quantile of their values, which trims outliers for fp16 files at the
    cost of exactness.
    """
    u, s, vh = decomposition if decomposition is not None else svd(delta)
    rank = max(1, min(rank, len(s)))
    up = u[:, :rank] * s[:rank]
    down = vh[:rank]
    if clamp_quantile is not None and clamp_quantile < 1:
        high = torch.quantile(torch.cat([up.flatten(), down.flatten()]), clamp_quantile)
        up, down = up.clamp(-high, high), down.clamp(-high, high)
    squares = s.pow(2)
    total, fro_total = float(s.sum()), float(squares.sum().sqrt())
    if len(weight_shape) == 4:
        up = up.reshape(weight_shape[0], rank, 1, 1)
        down = down.reshape(rank, *weight_shape[1:])
    return Factors(
        down=down.cpu().contiguous(),
        up=up.cpu().contiguous(),
        alpha=float(alpha),
        rank=rank,
        sum_retained=float(s[:rank].sum()) / total if total > 0 else 1.0,
        fro_retained=float(squares[:rank].sum().sqrt()) / fro_total if fro_total > 0 else 1.0,
        max_ratio=float(s[0] / s[rank - 1]) if s[rank - 1] > 0 else float("inf"),
    )


def _clamp(index: int, last: int) -> int:
    return max(0, min(index, last))
