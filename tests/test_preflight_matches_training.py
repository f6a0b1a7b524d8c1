"""The report's numbers are the run's: a tiny real training on the demo model counts the same steps and buckets.

The run is two steps long (the trainer is slow on a shared CPU); the plan it records in the LoRA's metadata is the
whole epoch's, so the buckets and batches per epoch are compared in full.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from sd_scripts.events import Event, Started
from sd_scripts.train import train
from test_preflight_fixtures import make_messy_dataset, small_config, tiny_model  # noqa: F401  (fixture)
from wizard.preflight import preflight_report
from wizard.translate import to_train_args


def test_steps_and_buckets_equal_what_the_trainer_does(tiny_model: Path, tmp_path: Path) -> None:
    images, reg = make_messy_dataset(tmp_path / "data", repeats=1)
    # 96 px with 32 px bucket steps between 64 and 128: square, wide and tall images land in three buckets.
    config = small_config(tiny_model, images, tmp_path / "out", train_resolution=96, bucket_reso_steps=32,
                          reg_img_folder=str(reg), gradient_acc_steps=2, max_steps=2, warmup_lr_ratio=0.5,
                          tag_occurrence_txt_file=False)
    report = preflight_report(config, read_gpu=lambda: None)
    assert report.can_start, report.problem

    events: list[Event] = []
    result = train(to_train_args(config), on_event=events.append)
    assert result.ok, result.message

    started = next(event for event in events if isinstance(event, Started))
    assert report.length is not None
    assert (report.length.steps_per_epoch, report.length.total_steps, report.length.epochs) == (
        started.steps_per_epoch, started.total_steps, started.epochs)
    assert (report.num_train_samples, report.num_reg_samples) == (started.num_train_images, 7)

    with safe_open(result.lora_path, framework="numpy") as lora:
        metadata = lora.metadata()
    assert report.batches_per_epoch == int(metadata["ss_num_batches_per_epoch"])
    trained_buckets = {tuple(bucket["resolution"]): bucket["count"]
                       for bucket in json.loads(metadata["ss_bucket_info"])["buckets"].values()}
    assert {bucket.resolution: bucket.samples for bucket in report.buckets} == trained_buckets
    assert set(trained_buckets) == {(64, 128), (96, 96), (128, 64)}
    # 64x128: 1 sample -> 1 batch, 96x96: 4 + 7 regularization -> 6, 128x64: 2 -> 1; 2 batches per step
    assert (report.batches_per_epoch, report.length.steps_per_epoch, report.length.total_steps) == (8, 4, 2)
    assert int(metadata["ss_lr_warmup_steps"]) == report.warmup_steps == 1
