"""What the dataset needs to know, under sd-scripts' names, and the per-subset options a dataset_config may vary.

`DatasetSettings` is the dataset's slice of the trainer's settings (`TrainArgs`). `SubsetOptions` are the options
sd-scripts lets each image folder ("subset") override in a `--dataset_config` file; in folder mode every subset gets
the values of `DatasetSettings`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sd_scripts.errors import UserFacingError

if TYPE_CHECKING:
    from sd_scripts.args import TrainArgs


@dataclass
class DatasetSettings:
    """The dataset settings of one training run; names and defaults as sd-scripts' `train_network.py`."""

    train_data_dir: str | None = None
    reg_data_dir: str | None = None
    dataset_config: str | None = None  # when set, train_data_dir and reg_data_dir are ignored (as sd-scripts)
    caption_extension: str = ".caption"
    resolution: tuple[int, int] | None = (512, 512)  # (width, height)
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    train_batch_size: int = 1
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    token_warmup_min: int = 1
    token_warmup_step: float = 0
    color_aug: bool = False
    flip_aug: bool = False
    random_crop: bool = False
    prior_loss_weight: float = 1.0
    seed: int | None = None  # None: a random seed is drawn once by scan_dataset and kept in the plan
    max_train_steps: int = 1600  # only read to turn a fractional token_warmup_step into steps

    @classmethod
    def from_train_args(cls, args: TrainArgs) -> DatasetSettings:
        """The dataset slice of the trainer's settings, under the same names; `resolution` is parsed from sd-scripts'
        "512" / "512,768"."""
        values = {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)}
        values["resolution"] = parse_resolution(args.resolution) if args.resolution is not None else None
        return cls(**values)

    def subset_options(self) -> SubsetOptions:
        """The options every folder-mode subset gets: these settings' values under the same names."""
        return SubsetOptions(**{field.name: getattr(self, field.name) for field in dataclasses.fields(SubsetOptions)})


@dataclass(frozen=True)
class SubsetOptions:
    """How the images of one subset are captioned and augmented (each may differ per subset in a dataset_config)."""

    caption_extension: str = ".caption"
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    token_warmup_min: int = 1
    token_warmup_step: float = 0
    color_aug: bool = False
    flip_aug: bool = False
    random_crop: bool = False


@dataclass(frozen=True)
class DatasetParams:
    """The settings shared by every subset of one sd-scripts dataset (resolution, batch size, bucketing)."""

    resolution: tuple[int, int]  # (width, height)
    batch_size: int
    enable_bucket: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    bucket_no_upscale: bool
    prior_loss_weight: float


def parse_resolution(value: str | int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    """sd-scripts' resolution: one number for a square, or "width,height"."""
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
    elif isinstance(value, int):
        parts = [str(value)]
    else:
        parts = [str(part) for part in value]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2 or min(numbers) <= 0:
        raise UserFacingError(
            f"The training resolution {value!r} is not understood; "
            "give one number like 512 or width,height like 512,768."
        )
    return numbers[0], numbers[1]
