"""One optimizer step shared by several processes (data parallel), without a wait for the GPUs in every step.

Each step makes one all-reduce through accelerate, of one flat tensor: every trainable parameter's gradient, the
step's loss, and each process's votes on what all processes must do alike at a later step (stop: the main process's
Stop button, or Ctrl+C in any process; read the losses back: the main process's progress clock, see
loss_readback.py). Nothing of it is read at once: the averaged gradients stay on the device for the optimizer, the
loss joins the loss read-back, and the votes are read one step late, when the GPUs finished that step long ago. So
every process sees the same votes at the same step, and the host never waits for the step in flight; a Stop takes
effect two steps after it is pressed.

Which parameters got a gradient is the same in every process, and known without asking the others, except for a
network that trains a random subset each step (DyLoRA, LyCORIS' module_dropout: `Network.trains_random_subsets`).
Its flags join the all-reduce and are read at once: the optimizer must leave alone a parameter no process trained
(weight decay included), as in one process, and count zeros for the processes that did not train it, as DDP does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

VOTES = ("stop", "read_losses")  # what each process votes on in every step, in this order


@dataclass
class Votes:
    """The all-reduced votes of the last two steps; every decision comes from the older one (module docstring)."""

    recent: deque[torch.Tensor] = field(default_factory=lambda: deque(maxlen=2))
    settled: dict[str, bool] | None = None  # the older one, read

    def add(self, reduced: torch.Tensor) -> None:
        self.recent.append(reduced)
        self.settled = None

    def decided(self, vote: str) -> bool:
        """Whether any process voted for `vote` in the step before the last one (False in a run's first two)."""
        if len(self.recent) < 2:
            return False
        if self.settled is None:
            self.settled = {name: value > 0 for name, value in zip(VOTES, self.recent[0].tolist())}
        return self.settled[vote]


def average_gradients(accelerator: Accelerator, parameters: list[torch.nn.Parameter], loss: torch.Tensor,
                      votes: Sequence[bool], *, trains_random_subsets: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every parameter's gradient replaced by its mean over the processes, in one all-reduce with the loss and the
    `votes` (one per name in VOTES). Returns the mean loss and the votes' means (above 0: some process voted yes)."""
    gradients = [parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
                 for parameter in parameters]
    used_here = [parameter.grad is not None for parameter in parameters]
    dtype = gradients[0].dtype
    parts = [gradient.reshape(-1) for gradient in gradients]
    parts += [loss.reshape(1).to(dtype), gradients[0].new_tensor([float(vote) for vote in votes])]
    if trains_random_subsets:
        parts.append(gradients[0].new_tensor([float(used) for used in used_here]))
    averaged = accelerator.reduce(torch.cat(parts), reduction="mean").split([part.numel() for part in parts])
    means, mean_loss, mean_votes = averaged[: len(gradients)], averaged[len(gradients)], averaged[len(gradients) + 1]
    used_somewhere = [share > 0 for share in averaged[-1].tolist()] if trains_random_subsets else used_here
    for parameter, mean, used in zip(parameters, means, used_somewhere):
        parameter.grad = mean.view_as(parameter) if used else None
    return mean_loss.reshape(()), mean_votes
