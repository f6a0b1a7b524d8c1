"""The batches of one epoch, in sd-scripts' order.

sd-scripts lists (bucket, batch number) pairs, every batch drawn from one bucket, and shuffles that list and the
images inside every bucket with `random.seed(seed + epoch)`. It shuffles in place once when the dataset is built
(epoch 0) and again at the start of each epoch, so the order of epoch `e` is the result of the shuffles for 0, 1, ...,
e applied one after the other; `epoch_batches` replays them, which makes any epoch reproducible on its own (resume).

With several processes (data parallel), `process_share` deals that one epoch order out as accelerate shards
sd-scripts' DataLoader of whole batches.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from sd_scripts.dataset.plan import DatasetPlan

T = TypeVar("T")


@dataclass(frozen=True)
class BatchSpec:
    """Which images make one batch; `load_batch` turns it into tensors."""

    index: int  # position in the epoch, 0-based
    dataset_index: int
    resolution: tuple[int, int]  # (width, height) of every image in the batch
    images: tuple[int, ...]  # indices into plan.images


def epoch_batches(plan: DatasetPlan, epoch: int) -> list[BatchSpec]:
    """The batches of `epoch` (1-based, as sd-scripts counts while training) in training order.

    With several datasets (a dataset_config) their batch lists are joined and shuffled once more with the same seed,
    standing in for the shuffling DataLoader sd-scripts puts over its dataset group.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be 0 or more, got {epoch}")
    chosen: list[tuple[int, tuple[int, int], tuple[int, ...]]] = []
    for dataset_index, dataset in enumerate(plan.datasets):
        batch_size = dataset.params.batch_size
        buckets = [list(bucket.entries) for bucket in dataset.buckets]
        order = [
            (bucket_index, batch_number)
            for bucket_index, entries in enumerate(buckets)
            for batch_number in range(math.ceil(len(entries) / batch_size))
        ]
        for shuffled_epoch in range(epoch + 1):
            rng = random.Random(plan.seed + shuffled_epoch)
            rng.shuffle(order)
            for entries in buckets:
                rng.shuffle(entries)
        for bucket_index, batch_number in order:
            start = batch_number * batch_size
            images = tuple(buckets[bucket_index][start : start + batch_size])
            chosen.append((dataset_index, dataset.buckets[bucket_index].resolution, images))
    if len(plan.datasets) > 1:
        random.Random(plan.seed + epoch).shuffle(chosen)
    return [
        BatchSpec(index=index, dataset_index=dataset_index, resolution=resolution, images=images)
        for index, (dataset_index, resolution, images) in enumerate(chosen)
    ]


def process_rounds(batches: Sequence[T], num_processes: int) -> list[tuple[T, ...]]:
    """The epoch's batches in rounds of one per process; process k trains the k-th batch of every round.

    This is accelerate's sharding of sd-scripts' DataLoader (one item = one whole batch; `even_batches`): round
    robin, with the last round filled up with the epoch's first batches, so every process takes ceil(n / N) batches
    and sd-scripts' `ceil(len(train_dataloader) / num_processes / gradient_accumulation_steps)` steps per epoch.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be 1 or more, got {num_processes}")
    rounds = math.ceil(len(batches) / num_processes)
    padded = [batches[index % len(batches)] for index in range(rounds * num_processes)]
    return [tuple(padded[start : start + num_processes]) for start in range(0, len(padded), num_processes)]
