"""Step losses read back from the GPU a few steps at a time, and non-finite steps skipped on the GPU itself.

Reading a loss (`loss.item()`) makes the host wait until the GPU has finished the step: for that moment nothing is
queued, and the next step's first kernels start late. sd-scripts reads every step's loss. Here, on a GPU, a step's
loss stays a GPU tensor; the losses of the steps made since the last read are read together, at most twice a
second, before anything that shows or writes them in order (a sample, a save, the end of an epoch, a stop).

The NaN guard must still stop a bad step before it reaches the weights. torch's fused Adam/AdamW take a `found_inf`
tensor (the protocol its GradScaler uses) and, when it is 1, leave the weights, the moments and the step count as
they were, on the GPU, without the host looking. With any other optimizer (or fp16's gradient scaler, which sets
`found_inf` itself) the loss is read before the optimizer steps, every step, as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

READ_INTERVAL_S = 0.5  # the progress window and the loss table hear of a step at most this late


def skips_non_finite_steps_on_device(optimizer: torch.optim.Optimizer, device: torch.device,
                                     scales_gradients: bool) -> bool:
    """Whether a step with a non-finite loss can be skipped by `optimizer` on `device` without reading the loss.

    On a CPU a read costs nothing (the step is done when the host gets there), so the plain read is kept."""
    return device.type == "cuda" and not scales_gradients and getattr(optimizer, "_step_supports_amp_scaling", False)


def skip_if_not_finite(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Tell a fused Adam/AdamW to leave everything as it is in its next step when `loss` is NaN or infinite."""
    optimizer.found_inf = torch.isfinite(loss).logical_not().to(torch.float32)


@dataclass(frozen=True)
class PendingStep:
    """A finished step whose loss may still be on the GPU, with the figures taken when the host queued it."""

    step: int
    epoch: int
    loss: torch.Tensor
    lr: float
    steps_per_second: float
    elapsed_s: float
    eta_s: float


@dataclass
class LossReadback:
    """The steps queued since the last read; `read()` returns them with their losses, read back in one go."""

    interval_s: float
    pending: list[PendingStep] = field(default_factory=list)
    last_read: float = field(default_factory=time.perf_counter)

    def add(self, step: PendingStep) -> None:
        self.pending.append(step)

    def due(self) -> bool:
        return bool(self.pending) and time.perf_counter() - self.last_read >= self.interval_s

    def read(self) -> list[tuple[PendingStep, float]]:
        """Every pending step with its loss as a number, oldest first: one wait for the GPU for all of them."""
        pending, self.pending = self.pending, []
        self.last_read = time.perf_counter()
        if not pending:
            return []
        return list(zip(pending, torch.stack([step.loss.reshape(()) for step in pending]).tolist()))
