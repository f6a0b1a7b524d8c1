"""`scan_dataset`: everything about a dataset that can be known without decoding pixels, in one `DatasetPlan`.

The plan holds the subsets and their images (sizes, captions, repeats), the bucket every image goes to, the batches
of an epoch, the tag frequency, the warnings for the user, and the `ss_*` metadata sd-scripts writes about its
dataset. The wizard's pre-flight report reads it before torch is imported; the training loop then draws the batches
of each epoch from it (`epoch_batches`) and loads them (`load_batch`).

The scan reads everything before it judges: every folder, caption and image is looked at, and when something blocks
training, one `DatasetProblems` lists all of it (with the warnings), so a user fixes the dataset in one go instead of
meeting the next mistake at the next try.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sd_scripts.dataset.buckets import (
    BucketChoice,
    make_bucket_resolutions,
    select_fixed_size,
    select_no_upscale_bucket,
    select_predefined_bucket,
)
from sd_scripts.dataset.dataset_config import read_dataset_config
from sd_scripts.dataset.folders import NAMING_ADVICE, discover_subsets
from sd_scripts.dataset.regularization import balance_regularization
from sd_scripts.dataset.settings import DatasetParams, DatasetSettings
from sd_scripts.dataset.subsets import ImageRecord, Subset, read_subset
from sd_scripts.errors import UserFacingError
from sd_scripts.untrusted import shown


@dataclass
class Bucket:
    """One training size and the images trained at it, each listed once per repeat (indices into plan.images)."""

    resolution: tuple[int, int]  # (width, height)
    entries: list[int]


@dataclass
class ImageDataset:
    """One sd-scripts dataset: subsets that share a resolution, a batch size and a bucketing mode."""

    params: DatasetParams
    subsets: list[Subset]  # the subsets with at least one image, as sd-scripts keeps them
    buckets: list[Bucket]  # sorted by resolution
    num_train_images: int  # training images x repeats
    num_reg_images: int  # regularization images x folder repeats, before balancing (as sd-scripts reports it)
    tag_frequency: dict[str, dict[str, int]]
    mean_ar_error: float | None  # None without bucketing

    @property
    def batches_per_epoch(self) -> int:
        return sum(math.ceil(len(bucket.entries) / self.params.batch_size) for bucket in self.buckets)

    def bucket_info(self) -> dict[str, Any] | None:
        """sd-scripts' `bucket_info`: the buckets with their counts (repeats included) and the mean AR error."""
        if not self.params.enable_bucket:
            return None
        buckets = {
            index: {"resolution": bucket.resolution, "count": len(bucket.entries)}
            for index, bucket in enumerate(self.buckets)
            if bucket.entries
        }
        return {"buckets": buckets, "mean_img_ar_error": self.mean_ar_error}


@dataclass
class DatasetPlan:
    """What training will see, epoch after epoch; built by `scan_dataset`."""

    settings: DatasetSettings
    seed: int
    datasets: list[ImageDataset]
    subsets: list[Subset]  # every subset read, also the empty ones (for the statistics)
    images: list[ImageRecord]  # every readable image; unused regularization images have num_repeats 0
    warnings: list[str]
    from_dataset_config: bool
    max_train_steps: int  # the trainer updates it when the epochs decide the length (fractional token warmup)

    @property
    def num_train_images(self) -> int:
        return sum(dataset.num_train_images for dataset in self.datasets)

    @property
    def num_reg_images(self) -> int:
        return sum(dataset.num_reg_images for dataset in self.datasets)

    @property
    def batches_per_epoch(self) -> int:
        return sum(dataset.batches_per_epoch for dataset in self.datasets)

    @property
    def bucket_counts(self) -> dict[tuple[int, int], int]:
        """Samples per epoch (repeats included) at each training size, all datasets together."""
        counts: Counter[tuple[int, int]] = Counter()
        for dataset in self.datasets:
            for bucket in dataset.buckets:
                counts[bucket.resolution] += len(bucket.entries)
        return dict(sorted(counts.items()))

    @property
    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """{folder name: {lower-cased tag: images}}; a folder used by several datasets counts once, as sd-scripts."""
        merged: dict[str, dict[str, int]] = {}
        for dataset in self.datasets:
            for folder, frequency in dataset.tag_frequency.items():
                merged.setdefault(folder, frequency)
        return merged

    def loss_weight(self, image_index: int, dataset_index: int) -> float:
        image = self.images[image_index]
        return self.datasets[dataset_index].params.prior_loss_weight if image.is_reg else 1.0

    def metadata(self) -> dict[str, str]:
        """The dataset's `ss_*` keys, values as strings (nested ones as JSON), exactly as sd-scripts writes them."""
        metadata: dict[str, Any] = {
            "ss_num_train_images": self.num_train_images,
            "ss_num_reg_images": self.num_reg_images,
            "ss_num_batches_per_epoch": self.batches_per_epoch,
        }
        if self.from_dataset_config:
            metadata["ss_datasets"] = json.dumps([_dataset_metadata(dataset) for dataset in self.datasets])
            metadata["ss_tag_frequency"] = json.dumps(self.tag_frequency)
            metadata["ss_dataset_dirs"] = json.dumps(_merged_dataset_dirs(self.datasets))
        else:
            (dataset,) = self.datasets
            dirs = {subset.name: _dir_info(subset) for subset in dataset.subsets if not subset.is_reg}
            reg_dirs = {subset.name: _dir_info(subset) for subset in dataset.subsets if subset.is_reg}
            metadata["ss_dataset_dirs"] = json.dumps(dirs)
            metadata["ss_reg_dataset_dirs"] = json.dumps(reg_dirs)
            metadata["ss_tag_frequency"] = json.dumps(dataset.tag_frequency)
            metadata["ss_bucket_info"] = json.dumps(dataset.bucket_info())
        return {key: str(value) for key, value in metadata.items()}


class DatasetProblems(UserFacingError):
    """Everything that stops this dataset from training, found in one scan, with the warnings found beside it."""

    def __init__(self, problems: list[str], warnings: list[str]) -> None:
        self.problems, self.warnings = list(problems), list(warnings)
        if len(problems) == 1 and not warnings:
            message = problems[0]
        else:
            lines = [f"{len(problems)} problems must be fixed before training can start:"
                     if len(problems) > 1 else "A problem must be fixed before training can start:"]
            lines += [f"- {problem}" for problem in problems]
            if warnings:
                lines.append("Also worth a look (these alone would not stop training):")
                lines += [f"- {warning}" for warning in warnings]
            message = "\n".join(lines)
        super().__init__(message)


def scan_dataset(settings: DatasetSettings) -> DatasetPlan:
    """Read the folders (or the dataset_config), captions and image sizes; bucket, balance and count everything.

    Raises `DatasetProblems` naming every blocking problem at once (a single problem is its own sentence)."""
    warnings: list[str] = []
    problems: list[str] = []
    seed = settings.seed if settings.seed is not None else random.randint(0, 2**32)
    if settings.dataset_config:
        layouts = read_dataset_config(settings.dataset_config, settings)
    else:
        layouts = [(_params_from_settings(settings), _subsets_from_folders(settings, warnings, problems))]
    subsets: list[Subset] = []
    images: list[ImageRecord] = []
    datasets = [_build_dataset(params, layout_subsets, subsets, images, warnings, problems)
                for params, layout_subsets in layouts]
    if problems:
        raise DatasetProblems(problems, warnings)
    if not any(dataset.num_train_images for dataset in datasets):
        raise DatasetProblems([_no_images_message(settings, subsets)], [])  # the sentence says why
    return DatasetPlan(
        settings=settings,
        seed=seed,
        datasets=datasets,
        subsets=subsets,
        images=images,
        warnings=warnings,
        from_dataset_config=bool(settings.dataset_config),
        max_train_steps=settings.max_train_steps,
    )


def _params_from_settings(settings: DatasetSettings) -> DatasetParams:
    if settings.resolution is None:
        raise UserFacingError("No training resolution is set; choose one, for example 512.")
    return DatasetParams(
        resolution=settings.resolution,
        batch_size=settings.train_batch_size,
        enable_bucket=settings.enable_bucket,
        min_bucket_reso=settings.min_bucket_reso,
        max_bucket_reso=settings.max_bucket_reso,
        bucket_reso_steps=settings.bucket_reso_steps,
        bucket_no_upscale=settings.bucket_no_upscale,
        prior_loss_weight=settings.prior_loss_weight,
    )


def _subsets_from_folders(settings: DatasetSettings, warnings: list[str], problems: list[str]) -> list[Subset]:
    if not settings.train_data_dir:
        raise UserFacingError("No training image folder is set; choose the folder that holds your image subfolders.")
    options = settings.subset_options()
    subsets = discover_subsets(settings.train_data_dir, is_reg=False, options=options, warnings=warnings,
                               problems=problems)
    if settings.reg_data_dir:
        subsets += discover_subsets(settings.reg_data_dir, is_reg=True, options=options, warnings=warnings,
                                    problems=problems)
    return subsets


def _checked_params(params: DatasetParams, warnings: list[str]) -> DatasetParams:
    """sd-scripts' checks of the bucket settings, including its rounding of min/max to the steps."""
    width, height = params.resolution
    if params.batch_size < 1:
        raise UserFacingError(f"The batch size is {params.batch_size}; set it to 1 or more.")
    if width % 8 or height % 8:
        raise UserFacingError(f"The resolution {width}x{height} is not a multiple of 8; use a size like 512 or 768.")
    if not params.enable_bucket:
        return params
    steps = params.bucket_reso_steps
    if steps < 8 or steps % 8:
        raise UserFacingError(f"The bucket step {steps} is not a multiple of 8; use 64 (or 32, 16, 8).")
    min_reso, max_reso = params.min_bucket_reso, params.max_bucket_reso
    if min_reso < steps:  # rounded down to a multiple of the step it would be 0: no bucket could be listed
        raise UserFacingError(f"The smallest bucket size {min_reso} is below the bucket step {steps}; "
                              f"set it to {steps} or more.")
    if min_reso % steps:
        min_reso -= min_reso % steps
        warnings.append(
            f"The smallest bucket size {params.min_bucket_reso} is rounded down to {min_reso}, a multiple of {steps}."
        )
    if max_reso % steps:
        max_reso += steps - max_reso % steps
        warnings.append(
            f"The largest bucket size {params.max_bucket_reso} is rounded up to {max_reso}, a multiple of {steps}."
        )
    if min(width, height) < min_reso:
        raise UserFacingError(
            f"The smallest bucket size {min_reso} is larger than the resolution {width}x{height}; lower it."
        )
    if max(width, height) > max_reso:
        raise UserFacingError(
            f"The largest bucket size {max_reso} is smaller than the resolution {width}x{height}; raise it."
        )
    return replace(params, min_bucket_reso=min_reso, max_bucket_reso=max_reso)


def _build_dataset(
    params: DatasetParams,
    subsets: list[Subset],
    all_subsets: list[Subset],
    images: list[ImageRecord],
    warnings: list[str],
    problems: list[str],
) -> ImageDataset:
    """Read the subsets, register their images as sd-scripts does (training first, then balanced regularization).

    A bucket setting that cannot work is one more problem: the images are still read, so theirs are found too."""
    try:
        params = _checked_params(params, warnings)
        params_work = True
    except UserFacingError as problem:
        problems.append(problem.message)
        params_work = False
    used_subsets: list[Subset] = []
    tag_frequency: dict[str, dict[str, int]] = {}
    train_images: list[ImageRecord] = []
    reg_images: list[ImageRecord] = []
    for subset in subsets:
        read_subset(subset, len(all_subsets), warnings, problems)
        all_subsets.append(subset)
        add_tag_frequency(tag_frequency, subset.name, [image.caption for image in subset.images])
        if not subset.images:
            warnings.append(f"The folder {subset.image_dir} contains no readable images; it is ignored.")
            continue
        used_subsets.append(subset)
        (reg_images if subset.is_reg else train_images).extend(subset.images)
    num_train_images = sum(image.num_repeats for image in train_images)
    num_reg_images = sum(image.num_repeats for image in reg_images)
    if reg_images:
        balance_regularization(reg_images, num_train_images)
        if num_reg_images > num_train_images:
            warnings.append("There are more regularization images than training images; some of them are not used.")
    first_index = len(images)
    images.extend(train_images + reg_images)
    registered = [index for index in range(first_index, len(images)) if images[index].num_repeats > 0]
    buckets, mean_ar_error = [], None
    if params_work:
        buckets, mean_ar_error = _assign_buckets(params, images, registered, all_subsets, problems)
    return ImageDataset(
        params=params,
        subsets=used_subsets,
        buckets=buckets,
        num_train_images=num_train_images,
        num_reg_images=num_reg_images,
        tag_frequency=tag_frequency,
        mean_ar_error=mean_ar_error,
    )


def _assign_buckets(
    params: DatasetParams, images: list[ImageRecord], registered: list[int], subsets: list[Subset],
    problems: list[str],
) -> tuple[list[Bucket], float | None]:
    predefined: list[tuple[int, int]] = []
    if params.enable_bucket and not params.bucket_no_upscale:
        predefined = make_bucket_resolutions(
            params.resolution, params.min_bucket_reso, params.max_bucket_reso, params.bucket_reso_steps
        )
    errors = []
    placed = []
    for index in registered:
        image = images[index]
        try:
            choice = _choose_bucket(params, image, predefined, subsets[image.subset_index].options.random_crop)
        except UserFacingError as problem:  # an image that fits no training size: named with the others
            problems.append(problem.message)
            continue
        placed.append(index)
        image.bucket, image.resized_size, image.ar_error = choice.bucket, choice.resized_size, choice.ar_error
        errors.append(abs(choice.ar_error))
    buckets = {resolution: Bucket(resolution, []) for resolution in sorted({images[i].bucket for i in placed})}
    for index in placed:
        buckets[images[index].bucket].entries.extend([index] * images[index].num_repeats)
    mean_ar_error = float(np.mean(np.array(errors))) if params.enable_bucket and errors else None
    return list(buckets.values()), mean_ar_error


def _choose_bucket(
    params: DatasetParams, image: ImageRecord, predefined: list[tuple[int, int]], random_crop: bool
) -> BucketChoice:
    """Without buckets, as sd-scripts: the image is scaled to cover the resolution and centre-cropped (what its
    latent cache encodes), or with random_crop cut at random from the unscaled image (what its loader does)."""
    width, height = image.size
    if not params.enable_bucket and not random_crop:
        return select_predefined_bucket(image.size, [params.resolution])
    if not params.enable_bucket:
        if width < params.resolution[0] or height < params.resolution[1]:
            raise UserFacingError(
                f"The image {image.path} ({width}x{height}) is smaller than the resolution "
                f"{params.resolution[0]}x{params.resolution[1]}; turn on buckets, turn off random crop, or enlarge the image."
            )
        return select_fixed_size(image.size, params.resolution)
    if params.bucket_no_upscale:
        area = params.resolution[0] * params.resolution[1]
        choice = select_no_upscale_bucket(image.size, area, params.bucket_reso_steps)
        if min(choice.bucket) == 0:
            raise UserFacingError(
                f"The image {image.path} ({width}x{height}) is narrower than one bucket step "
                f"({params.bucket_reso_steps} px); remove it or enlarge it."
            )
        return choice
    return select_predefined_bucket(image.size, predefined)


def add_tag_frequency(frequency: dict[str, dict[str, int]], folder: str, captions: list[str]) -> None:
    """Count each comma-separated, lower-cased tag once per caption it appears in, as sd-scripts' set_tag_frequency."""
    counts = frequency.setdefault(folder, {})
    for caption in captions:
        for tag in caption.split(","):
            tag = tag.strip().lower()
            if tag:
                counts[tag] = counts.get(tag, 0) + 1


def _no_images_message(settings: DatasetSettings, subsets: list[Subset]) -> str:
    unreadable = [shown(path.name) for subset in subsets for path in subset.unreadable_images]
    if unreadable:
        return (f"No training image can be used ({', '.join(unreadable[:5])} cannot be read or are too large); add "
                "readable PNG, JPG, WEBP or BMP images.")
    folders = ", ".join(str(subset.image_dir) for subset in subsets if not subset.is_reg)
    where = folders or settings.dataset_config or settings.train_data_dir
    return f"No training images were found in {where}; {NAMING_ADVICE} (PNG, JPG, WEBP or BMP)."


def _dir_info(subset: Subset) -> dict[str, int]:
    return {"n_repeats": subset.num_repeats, "img_count": subset.img_count}


def _dataset_metadata(dataset: ImageDataset) -> dict[str, Any]:
    params = dataset.params
    return {
        "is_dreambooth": True,
        "batch_size_per_device": params.batch_size,
        "num_train_images": dataset.num_train_images,
        "num_reg_images": dataset.num_reg_images,
        "resolution": params.resolution,
        "enable_bucket": params.enable_bucket,
        "min_bucket_reso": params.min_bucket_reso if params.enable_bucket else None,
        "max_bucket_reso": params.max_bucket_reso if params.enable_bucket else None,
        "tag_frequency": dataset.tag_frequency,
        "bucket_info": dataset.bucket_info(),
        "subsets": [
            {
                "img_count": subset.img_count,
                "num_repeats": subset.num_repeats,
                "color_aug": subset.options.color_aug,
                "flip_aug": subset.options.flip_aug,
                "random_crop": subset.options.random_crop,
                "shuffle_caption": subset.options.shuffle_caption,
                "keep_tokens": subset.options.keep_tokens,
                "image_dir": subset.name,
                "class_tokens": subset.class_tokens,
                "is_reg": subset.is_reg,
            }
            for subset in dataset.subsets
        ],
    }


def _merged_dataset_dirs(datasets: list[ImageDataset]) -> dict[str, dict[str, int]]:
    """The training folders of all datasets; a name seen twice becomes `name (2)`, as sd-scripts names it."""
    merged: dict[str, dict[str, int]] = {}
    for dataset in datasets:
        for subset in dataset.subsets:
            if subset.is_reg:
                continue
            name, number = subset.name, 2
            while name in merged:
                name, number = f"{subset.name} ({number})", number + 1
            merged[name] = _dir_info(subset)
    return merged
