"""Several processes (one per GPU) training one LoRA data-parallel, launched by `accelerate launch`.

accelerate owns the process group; this module only chooses how it is set up, in one place, so that the wizard's
start-up (which needs to know the main process before any popup) and the trainer's `Accelerator` agree:

- NCCL between NVIDIA GPUs on Linux (accelerate's default); gloo on Windows, where NCCL does not exist, and between
  CPU processes (as sd-scripts' `prepare_accelerator` chooses). Windows' PyTorch is built without libuv, so its
  rendezvous store is asked not to use it (sd-scripts does the same).
- Without CUDA, `accelerate launch --multi_gpu` starts the processes through torchrun but accelerate would make
  each a lonely single process (it looks for GPUs only); `cpu=True` makes them one gloo group instead.
- A long timeout: the other processes wait for the main one while its user reads the popups or the main process
  makes sample images, which can take longer than PyTorch's default 10 (NCCL) or 30 (gloo) minutes. A process
  that dies still ends the others at once: torchrun stops the whole group when one of them fails.

`launched_processes` reads the launcher's environment without importing torch, for the wizard's pre-flight report.
"""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accelerate import InitProcessGroupKwargs, PartialState

WAIT_FOR_OTHER_PROCESSES = datetime.timedelta(hours=24)


def launched_processes() -> int:
    """How many processes the launcher started (torchrun's WORLD_SIZE, which `accelerate launch` sets); 1 if none."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def process_group_kwargs() -> InitProcessGroupKwargs:
    """accelerate's handler for the process group set-up described in the module docstring."""
    import torch
    from accelerate import InitProcessGroupKwargs

    windows = os.name == "nt"
    return InitProcessGroupKwargs(
        backend="gloo" if windows or not torch.cuda.is_available() else None,
        init_method="env://?use_libuv=False" if windows else None,
        timeout=WAIT_FOR_OTHER_PROCESSES,
    )


def use_cpu_processes() -> bool:
    """CPU processes (gloo) when several were launched on a machine without CUDA; see the module docstring."""
    import torch

    return launched_processes() > 1 and not torch.cuda.is_available()


def process_state() -> PartialState:
    """accelerate's view of this process (index, count, main or not), joining the process group on first use.

    Call it instead of a bare `PartialState()` wherever the group may not be set up yet: after a run, accelerate's
    process-wide state is reset, and a bare one made then would not know the CPU processes of each other.
    """
    from accelerate import PartialState

    handler = process_group_kwargs()
    return PartialState(cpu=use_cpu_processes(), **handler.to_kwargs())
