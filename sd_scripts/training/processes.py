"""Several processes (one per GPU) training one LoRA data-parallel, launched by `accelerate launch`.

accelerate owns the process group; this module only chooses how it is set up, in one place, so that the wizard's
start-up (which needs to know the main process before any popup) and the trainer's `Accelerator` agree:

- NCCL between NVIDIA GPUs on Linux (accelerate's default); gloo on Windows, where NCCL does not exist, and between
  CPU processes (as sd-scripts' `prepare_accelerator` chooses). Windows' PyTorch is built without libuv, so its
  rendezvous store is asked not to use it (sd-scripts does the same; torchrun's own store needs USE_LIBUV=0 set
  before the launch, which the README says).
- Without CUDA, `accelerate launch --multi_gpu` starts the processes through torchrun but accelerate would make
  each a lonely single process (it looks for GPUs only); `cpu=True` makes them one gloo group instead.
- A long timeout: the other processes wait for the main one while its user reads the popups or the main process
  makes sample images, which can take longer than PyTorch's default 10 (NCCL) or 30 (gloo) minutes. A process
  that dies still ends the others at once: torchrun stops the whole group when one of them fails.

`launched_processes` reads the launcher's environment without importing torch, for the wizard's pre-flight report.

Every process runs the same program, but only the main one decides what to train (the wizard's popups, a queue, a
command line): the others `follow_main_process`, and the main process's trainer `announce_run`s each run's settings
to them once its own checks of the outputs have passed, so a run the main process never starts is never started by
the others either. At its end the main process `dismiss_other_processes`. The messages go through accelerate's
`broadcast_object_list`.
"""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from accelerate import InitProcessGroupKwargs, PartialState

    from sd_scripts.args import TrainArgs
    from sd_scripts.training.result import TrainResult

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


def announce_run(args: TrainArgs) -> None:
    """The main process's trainer: tell the other processes to train `args` (see the module docstring)."""
    if launched_processes() > 1:
        _from_main_process(args)


def dismiss_other_processes() -> None:
    """The main process has nothing more to train: the other processes end."""
    if launched_processes() > 1 and process_state().is_main_process:
        _from_main_process(None)


def follow_main_process(train: Callable[[TrainArgs], TrainResult]) -> bool:
    """A process other than the main one: train each run the main process announces, until it dismisses us.

    Returns False at once when a run fails here: the process then ends, and the launcher (torchrun) ends the others,
    which would otherwise wait for this one forever. True when every run went well."""
    while (args := _from_main_process(None)) is not None:
        if not train(args).ok:
            return False
    return True


def _from_main_process(value: Any) -> Any:
    """The main process's `value`, on every process (after a run accelerate's state is reset: join it again)."""
    from accelerate.utils import broadcast_object_list

    process_state()
    return broadcast_object_list([value], from_process=0)[0]
