"""Batches prepared ahead of the training step: a `torch.utils.data.DataLoader` over the batches of each epoch.

The training process decides everything about a batch before a worker sees it: the epoch's order (`epoch_batches`)
and, for every batch, a `BatchRequest` with its spec, its epoch and the optimizer step it belongs to. A worker only
runs `load_batch` on a request, and every random choice in there comes from `batch_rng(plan, epoch, batch index)`;
so 0, 1 or 8 workers, forked or spawned, give the same batches, and a resumed run starts at the very request the
interrupted one stopped before. The step a batch belongs to follows from its position in the epoch (token warmup
reads it), so loading batches ahead of the step does not change their captions. (sd-scripts has its workers read a
step counter shared with the training process, which with prefetching is the step training has reached, not the
one the batch is for.)

Everything sent to a worker pickles (the plan, the latent cache, the requests), as Windows' spawned workers need.
Like sd-scripts, at most as many workers as the machine has CPUs are started, and `persistent_workers` keeps them
between epochs. Pinned memory is used on CUDA, so a batch's copy to the GPU can overlap the step.

With latents cached in memory, loading a batch is picking tensors out of a dict: workers would only add copying
through shared memory (and, where workers are spawned, a fresh Python importing torch for each), so batches are then
loaded in the training process, whatever `num_workers` says. Measured on the demo's 200 batches (4 epochs of 50,
64 px, batch 2, persistent workers, a 2-core machine under load): 0.03-0.04 s in the training process, 0.6-1.2 s
through 1 or 2 forked workers, 4.8-6.1 s through 1 spawned worker (3-4 s of it before the first batch).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sd_scripts.dataset.batches import Batch, load_batch
from sd_scripts.dataset.epochs import BatchSpec
from sd_scripts.dataset.plan import DatasetPlan
from sd_scripts.errors import UserFacingError

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from sd_scripts.dataset.latent_cache import LatentCache


@dataclass(frozen=True)
class BatchRequest:
    """What a worker needs to load one batch: which images, for which epoch, for which optimizer step."""

    spec: BatchSpec
    epoch: int  # 1-based
    global_step: int  # optimizer steps done before the step this batch is part of (token warmup reads it)


class BatchDataset:
    """`load_batch` as a map-style dataset for the DataLoader, indexed by `BatchRequest`s instead of integers.

    A user's mistake found while loading (a damaged image) comes back as the error itself: raised in a worker, the
    DataLoader would raise a new one whose message is the worker's traceback instead of the one sentence.
    """

    def __init__(self, plan: DatasetPlan, latent_cache: LatentCache | None) -> None:
        self.plan = plan
        self.latent_cache = latent_cache

    def __getitem__(self, request: BatchRequest) -> Batch | UserFacingError:
        try:
            return load_batch(self.plan, request.spec, request.epoch, request.global_step, self.latent_cache)
        except UserFacingError as error:
            return error


class EpochRequests:
    """The DataLoader's sampler: the requests of the current epoch, set before each pass over the loader."""

    def __init__(self) -> None:
        self.requests: list[BatchRequest] = []

    def __iter__(self) -> Iterator[BatchRequest]:
        return iter(self.requests)

    def __len__(self) -> int:
        return len(self.requests)


def loading_workers(requested: int, *, latents_in_memory: bool) -> int:
    """The worker processes to start: none for latents in memory (see the module docstring), at most one per CPU.

    Needs no torch, so the wizard's summary can say when `num_workers` is not used."""
    if latents_in_memory:
        return 0
    return max(0, min(requested, os.cpu_count() or 1))


class BatchLoader:
    """One DataLoader for the whole run; `epoch` hands out an epoch's batches grouped by optimizer step."""

    def __init__(
        self,
        plan: DatasetPlan,
        latent_cache: LatentCache | None,
        *,
        num_workers: int,
        persistent_workers: bool,
        pin_memory: bool,
        multiprocessing_context: str | None = None,
    ) -> None:
        import torch
        from torch.utils.data import DataLoader

        self.num_workers = loading_workers(num_workers, latents_in_memory=bool(latent_cache and latent_cache.in_memory))
        self.requests = EpochRequests()
        self.current: Generator[list[Batch], None, None] | None = None  # the epoch being handed out
        self.loader: DataLoader | None = DataLoader(
            BatchDataset(plan, latent_cache),
            batch_size=None,  # every item already is a batch
            sampler=self.requests,
            num_workers=self.num_workers,
            persistent_workers=persistent_workers and self.num_workers > 0,
            pin_memory=pin_memory,
            multiprocessing_context=multiprocessing_context if self.num_workers > 0 else None,
            # The workers' base seed is drawn from this generator, not from torch's global one, which the network's
            # dropout uses: starting an epoch's workers must not change the training's random numbers.
            generator=torch.Generator().manual_seed(plan.seed),
        )

    def epoch(
        self, epoch: int, specs: list[BatchSpec], *, first: int, first_step: int, accumulation: int
    ) -> Iterator[list[Batch]]:
        """The batches `specs[first:]` of `epoch`, `accumulation` at a time (the last group may be shorter).

        `specs` are this process's batches of the epoch (all of them when it trains alone). `first` (a multiple of
        `accumulation`, or the end) is where a resumed run continues; `first_step` is the number of optimizer steps
        done before it. Loading starts with the first group asked for.
        """
        if self.loader is None:
            raise RuntimeError("the batch loader is closed")
        self.requests.requests = [
            BatchRequest(spec, epoch, first_step + position // accumulation)
            for position, spec in enumerate(specs[first:])
        ]
        self.current = _grouped(self.loader, len(specs) - first, accumulation)
        return self.current

    def close(self) -> None:
        """Stop the worker processes now (persistent ones would otherwise live until the loader is collected)."""
        if self.current is not None:
            self.current.close()
        self.current = self.loader = None


def _grouped(loader: DataLoader, count: int, size: int) -> Generator[list[Batch], None, None]:
    batches = iter(loader)
    for start in range(0, count, size):
        yield [_raised(next(batches)) for _ in range(min(size, count - start))]


def _raised(loaded: Batch | UserFacingError) -> Batch:
    if isinstance(loaded, UserFacingError):
        raise loaded
    return loaded
