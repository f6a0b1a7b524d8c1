"""Each image's SDXL size conditioning as sd-scripts' BaseDataset.__getitem__ records it: the file's size, the crop
top-left of BucketManager.get_crop_ltrb (mirrored for a flipped image), the bucket as target; the same from cached
latents, whose SDXL files are `_sdxl.npz`."""

from __future__ import annotations

import numpy as np
import torch
from test_dataset_fixtures import settings_for, write_folder

from sd_scripts.dataset import cache_latents, epoch_batches, load_batch, scan_dataset

SIZES = [(301, 200), (150, 210), (128, 128)]  # (width, height)


def sd_scripts_conditioning(size, bucket, flipped):
    """get_crop_ltrb (Stability AI's convention) and __getitem__'s flip rule, written from sd-scripts' source."""
    bucket_ar, image_ar = bucket[0] / bucket[1], size[0] / size[1]
    if bucket_ar > image_ar:
        resized_w, resized_h = bucket[1] * image_ar, bucket[1]
    else:
        resized_w, resized_h = bucket[0], bucket[0] / image_ar
    left, top = (bucket[0] - resized_w) // 2, (bucket[1] - resized_h) // 2
    if flipped:
        left = bucket[0] - (left + resized_w)
    return (size[1], size[0]), (int(top), int(left)), (bucket[1], bucket[0])


def conditioning_seen(plan, epochs, cache=None):
    seen = set()
    for epoch in range(1, epochs + 1):
        for spec in epoch_batches(plan, epoch):
            batch = load_batch(plan, spec, epoch, 0, cache)
            for row, index in enumerate(spec.images):
                seen.add((index, tuple(batch.original_sizes_hw[row].tolist()), tuple(batch.crop_top_lefts[row].tolist()),
                          tuple(batch.target_sizes_hw[row].tolist())))
                assert batch.original_sizes_hw.dtype == torch.int64
    return seen


def test_size_conditioning_follows_sd_scripts_with_buckets_and_flips(tmp_path):
    write_folder(tmp_path / "1_shape", SIZES, ["a shape"] * len(SIZES))
    plan = scan_dataset(settings_for(tmp_path, resolution=(128, 128), enable_bucket=True, min_bucket_reso=64,
                                     max_bucket_reso=256, bucket_reso_steps=32, flip_aug=True))
    expected = {(index, *sd_scripts_conditioning(image.size, image.bucket, flipped))
                for index, image in enumerate(plan.images) for flipped in (False, True)}
    seen = conditioning_seen(plan, epochs=6)
    assert seen <= expected
    assert len({entry[0] for entry in seen}) == len(SIZES)
    assert any(a[0] == b[0] and a[2] != b[2] for a in seen for b in seen)  # a flip moved some image's crop left
    wide = next(entry for entry in seen if entry[0] == 0)
    assert wide[1] == (200, 301) and wide[3] == tuple(reversed(plan.images[0].bucket))

    cache = cache_latents(plan, lambda pixels: pixels[:, :4, ::8, ::8], to_disk=True, sdxl=True)
    assert all(path.name.endswith("_sdxl.npz") for path in cache.on_disk.values())
    first = plan.images[0]
    with np.load(cache.on_disk[0]) as npz:  # sd-scripts' keys, which its SDXL loader reads back
        assert npz["original_size"].tolist() == list(first.size)
        assert npz["crop_ltrb"].tolist()[:2] == [sd_scripts_conditioning(first.size, first.bucket, False)[1][1],
                                                 sd_scripts_conditioning(first.size, first.bucket, False)[1][0]]
    assert conditioning_seen(plan, epochs=6, cache=cache) <= expected
