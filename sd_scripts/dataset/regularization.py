"""Regularization images are repeated until they are as many samples per epoch as the training images, as sd-scripts.

sd-scripts walks the regularization images in order: the first pass registers each with its folder's repeats, later
passes add one repeat at a time, round-robin, and it stops as soon as the count reaches the training samples. The
count may overshoot on the first pass (a folder's repeats are added whole), and images never reached stay unused.
"""

from __future__ import annotations

from sd_scripts.dataset.subsets import ImageRecord


def balance_regularization(reg_images: list[ImageRecord], num_train_samples: int) -> None:
    """Set `num_repeats` of every regularization image; 0 marks an image the epoch does not need."""
    folder_repeats = [image.num_repeats for image in reg_images]
    for image in reg_images:
        image.num_repeats = 0
    if not reg_images:
        return
    samples = 0
    first_pass = True
    while samples < num_train_samples:
        for image, repeats in zip(reg_images, folder_repeats):
            added = repeats if first_pass else 1
            image.num_repeats += added
            samples += added
            if samples >= num_train_samples:
                break
        first_pass = False
