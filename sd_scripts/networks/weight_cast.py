"""The network's float32 weights cast to autocast's half precision with one operation a step, not one per weight.

Under autocast every LoRA layer's `linear`/`conv2d` casts its two float32 weights to bf16/fp16 in the forward pass,
and the backward pass casts their two gradients back: four operations per module, 768 of an SD1.5 U-Net LoRA
step's 3838 (a fifth), each a kernel launch on a GPU, where a step at batch 1 is bounded by launches rather than by
arithmetic. `cast_together` makes the same casts for all of a step's weights at once: they are concatenated and cast
in the forward pass (two operations), and their gradients concatenated and cast back in the backward pass (two
more). The values are autocast's own to the bit: each weight is rounded to the half precision exactly as autocast
rounds it, and each gradient comes back to float32 as autocast's cast returns it.

Weights whose module takes no part in the step (a text encoder run without gradients) get no gradient, as before,
not a zero one: an optimizer skips a parameter without a gradient but would decay one whose gradient is zero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch


class CastsWeights(Protocol):
    """A module that can take its weights already cast for the step (see LoRAModule)."""

    cast_weights: tuple[torch.Tensor, ...] | None

    def trained_weights(self) -> tuple[torch.Tensor, ...]: ...


class _CastTogether(torch.autograd.Function):
    """float32 weights -> their casts to `dtype`, as views of one cast buffer; the backward likewise in one piece."""

    @staticmethod
    def forward(ctx, dtype: torch.dtype, *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)  # an unused weight's gradient stays None, not a tensor of zeros
        ctx.shapes = [weight.shape for weight in weights]
        ctx.source_dtype = weights[0].dtype
        cast = torch.cat([weight.reshape(-1) for weight in weights]).to(dtype)
        pieces = cast.split([weight.numel() for weight in weights])
        return tuple(piece.view(shape) for piece, shape in zip(pieces, ctx.shapes))

    @staticmethod
    def backward(ctx, *gradients: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        present = [index for index, gradient in enumerate(gradients) if gradient is not None]
        result: list[torch.Tensor | None] = [None] * len(gradients)
        if present:
            flat = torch.cat([gradients[index].reshape(-1) for index in present]).to(ctx.source_dtype)
            pieces = flat.split([gradients[index].numel() for index in present])
            for index, piece in zip(present, pieces):
                result[index] = piece.view(ctx.shapes[index])
        return (None, *result)


@contextlib.contextmanager
def cast_together(modules: Sequence[CastsWeights], dtype: torch.dtype | None) -> Iterator[None]:
    """While inside, `modules` compute with their weights cast to `dtype` once for all of them (None: nothing to
    cast, full precision). Keep the forward and the backward pass inside: gradient checkpointing computes parts of
    the forward again during the backward, and those must use the same casts."""
    weights = [weight for module in modules for weight in module.trained_weights()]
    if dtype is None or not weights or not torch.is_grad_enabled():
        yield
        return
    casts = iter(_CastTogether.apply(dtype, *weights))
    for module in modules:
        module.cast_weights = tuple(next(casts) for _ in module.trained_weights())
    try:
        yield
    finally:
        for module in modules:
            module.cast_weights = None
