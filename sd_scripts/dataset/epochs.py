"""The batches of one epoch, in sd-scripts' order.

sd-scripts lists (bucket, batch number) pairs, every batch drawn from one bucket, and shuffles that list and the
images inside every bucket with `random.seed(seed + epoch)`. It shuffles in place once when the dataset is built
(epoch 0) and again at the start of each epoch, so the order of epoch `e` is the result of the shuffles for 0, 1, ...,
e applied one after the other; `epoch_batches` replays them, which makes any epoch reproducible on its own (resume).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from sd_scripts.dataset.plan import DatasetPlan


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
