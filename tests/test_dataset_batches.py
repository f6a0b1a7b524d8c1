"""The batches of each epoch (sd-scripts' seed + epoch shuffles), loading pixels, caption and image augmentation,
and determinism: the same seed gives the same batches on every run."""

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from test_dataset_fixtures import settings_for, write_folder, write_image

from sd_scripts.dataset import SubsetOptions, epoch_batches, load_batch, scan_dataset
from sd_scripts.dataset.captions import process_caption
from sd_scripts.dataset.images import color_jitter



@pytest.fixture
def bucketed_plan(tmp_path):
    write_folder(tmp_path / "3_a", [(64, 64)] * 3, ["a1, x, y", "a2, x, y", "a3, x, y"])
    write_folder(tmp_path / "2_b", [(96, 64), (96, 64), (64, 128)], ["b1", "b2", "b3"])
    return scan_dataset(
        settings_for(tmp_path, resolution=(64, 64), enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128,
                     bucket_reso_steps=32, train_batch_size=2)
    )


def sd_scripts_order(plan, epochs):
    """sd-scripts' own procedure, mutated in place: shuffle with seed+0 when built, then seed+e at each epoch."""
    dataset = plan.datasets[0]
    buckets = [list(bucket.entries) for bucket in dataset.buckets]
    size = dataset.params.batch_size
    indices = [(b, n) for b, entries in enumerate(buckets) for n in range(math.ceil(len(entries) / size))]
    orders = []
    for epoch in range(epochs + 1):
        random.seed(plan.seed + epoch)
        random.shuffle(indices)
        for entries in buckets:
            random.shuffle(entries)
        orders.append([tuple(buckets[b][n * size : (n + 1) * size]) for b, n in indices])
    return orders[1:]


def test_epoch_batches_follow_sd_scripts_shuffles(bucketed_plan):
    expected = sd_scripts_order(bucketed_plan, 3)
    for epoch in (1, 2, 3):
        assert [spec.images for spec in epoch_batches(bucketed_plan, epoch)] == expected[epoch - 1]
    assert expected[0] != expected[1]


def test_every_sample_once_per_epoch_and_every_batch_from_one_bucket(bucketed_plan):
    batches = epoch_batches(bucketed_plan, 1)
    assert len(batches) == bucketed_plan.batches_per_epoch
    drawn = sorted(index for spec in batches for index in spec.images)
    assert drawn == sorted(entry for bucket in bucketed_plan.datasets[0].buckets for entry in bucket.entries)
    for spec in batches:
        assert len(spec.images) <= 2
        assert {bucketed_plan.images[index].bucket for index in spec.images} == {spec.resolution}


def test_load_batch_gives_pixels_captions_and_weights(bucketed_plan):
    for spec in epoch_batches(bucketed_plan, 1):
        batch = load_batch(bucketed_plan, spec, epoch=1, global_step=0)
        width, height = spec.resolution
        assert batch.pixels.shape == (len(spec.images), 3, height, width)
        assert batch.pixels.dtype == torch.float32 and batch.latents is None
        assert -1.0 <= batch.pixels.min() and batch.pixels.max() <= 1.0
        assert batch.loss_weights.tolist() == [1.0] * len(spec.images)
        assert batch.captions == [bucketed_plan.images[index].caption for index in spec.images]


def test_center_crop_without_buckets(tmp_path):
    path = write_image(tmp_path / "1_a" / "tall.png", (64, 80))
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    batch = load_batch(plan, epoch_batches(plan, 1)[0], epoch=1, global_step=0)
    expected = np.asarray(Image.open(path))[8:72]
    assert torch.equal(batch.pixels[0], torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 127.5 - 1)


def test_flip_aug_mirrors_about_half_of_the_images(tmp_path):
    path = write_image(tmp_path / "40_a" / "img.png", (64, 64))
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64), flip_aug=True, train_batch_size=40))
    pixels = load_batch(plan, epoch_batches(plan, 1)[0], epoch=1, global_step=0).pixels
    original = torch.from_numpy(np.asarray(Image.open(path)).copy()).permute(2, 0, 1).float() / 127.5 - 1
    flipped = sum(torch.equal(image, original.flip(2)) for image in pixels)
    assert sum(torch.equal(image, original) for image in pixels) + flipped == 40
    assert 10 <= flipped <= 30


def test_same_seed_same_batches_other_seed_other_batches(tmp_path):
    write_folder(tmp_path / "4_a", [(64, 80), (80, 64), (64, 64)], ["a, b, c, d", "e, f, g", "h, i"])
    options = dict(resolution=(64, 64), enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128,
                   bucket_reso_steps=32, train_batch_size=2, flip_aug=True, color_aug=True, random_crop=True,
                   shuffle_caption=True, caption_tag_dropout_rate=0.3)

    def run(seed):
        plan = scan_dataset(settings_for(tmp_path, seed=seed, **options))
        loaded = [load_batch(plan, spec, epoch=2, global_step=5) for spec in epoch_batches(plan, 2)]
        return [spec.images for spec in epoch_batches(plan, 2)], [(b.captions, b.pixels) for b in loaded]

    order, batches = run(7)
    order_again, batches_again = run(7)
    assert order == order_again
    for (captions, pixels), (captions_again, pixels_again) in zip(batches, batches_again):
        assert captions == captions_again and torch.equal(pixels, pixels_again)
    other_order, other_batches = run(8)
    assert (order, [c for c, _ in batches]) != (other_order, [c for c, _ in other_batches])


def test_reg_images_carry_the_prior_loss_weight(tmp_path):
    write_folder(tmp_path / "train" / "1_a", [(64, 64)])
    write_folder(tmp_path / "reg" / "1_r", [(64, 64)])
    plan = scan_dataset(settings_for(tmp_path / "train", reg_data_dir=str(tmp_path / "reg"), resolution=(64, 64),
                                     prior_loss_weight=0.25, train_batch_size=2))
    (spec,) = epoch_batches(plan, 1)
    weights = load_batch(plan, spec, epoch=1, global_step=0).loss_weights
    assert sorted(weights.tolist()) == [0.25, 1.0]


# --- captions ---------------------------------------------------------------------------------------------------

CAPTION = "mychar, red hair, blue eyes, smile, outdoors, sky"


def caption_for(options, epoch=1, step=0, seed=0, max_train_steps=100):
    return process_caption(CAPTION, options, epoch=epoch, step=step, max_train_steps=max_train_steps,
                           rng=random.Random(seed))


def test_shuffle_keeps_the_first_keep_tokens_in_place():
    results = {caption_for(SubsetOptions(shuffle_caption=True, keep_tokens=2), seed=seed) for seed in range(20)}
    assert len(results) > 5
    for result in results:
        tags = result.split(", ")
        assert tags[:2] == ["mychar", "red hair"]
        assert sorted(tags[2:]) == sorted(["blue eyes", "smile", "outdoors", "sky"])


def test_no_tag_processing_leaves_the_caption_untouched():
    assert caption_for(SubsetOptions()) == CAPTION
    untouched = process_caption(" a ,b ", SubsetOptions(), epoch=1, step=0, max_train_steps=1, rng=random.Random(0))
    assert untouched == " a ,b "
    assert process_caption(" a ,b ", SubsetOptions(shuffle_caption=True, keep_tokens=9), epoch=1, step=0,
                           max_train_steps=1, rng=random.Random(0)) == "a, b"


def test_dropout_every_n_epochs_uses_one_based_epochs():
    options = SubsetOptions(caption_dropout_every_n_epochs=2)
    assert [caption_for(options, epoch=epoch) == "" for epoch in (1, 2, 3, 4)] == [False, True, False, True]


def test_caption_dropout_rate_and_tag_dropout():
    assert caption_for(SubsetOptions(caption_dropout_rate=1.0)) == ""
    assert caption_for(SubsetOptions(caption_tag_dropout_rate=1.0, keep_tokens=1)) == "mychar"
    dropped = [caption_for(SubsetOptions(caption_tag_dropout_rate=0.5), seed=seed) for seed in range(20)]
    assert all(set(result.split(", ")) <= set(CAPTION.split(", ")) for result in dropped if result)
    assert len(set(dropped)) > 5


def test_token_warmup_grows_the_number_of_tags():
    options = SubsetOptions(token_warmup_min=1, token_warmup_step=10, keep_tokens=1)
    # 5 flexible tags: floor(step * (5 - 1) / 10) + 1 of them are kept
    assert [len(caption_for(options, step=step).split(", ")) for step in (0, 3, 5, 9, 10)] == [2, 3, 4, 5, 6]
    fraction = SubsetOptions(token_warmup_min=1, token_warmup_step=0.1)
    assert len(caption_for(fraction, step=0, max_train_steps=100).split(", ")) == 1  # 0.1 x 100 = 10 warmup steps


def test_color_jitter_keeps_shape_and_sometimes_changes_colors():
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    results = [color_jitter(pixels, random.Random(seed)) for seed in range(30)]
    assert all(result.shape == pixels.shape and result.dtype == np.uint8 for result in results)
    changed = sum(not np.array_equal(result, pixels) for result in results)
    assert 3 <= changed <= 20  # p = 0.33
