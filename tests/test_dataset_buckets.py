"""Bucket lists and assignments against test vectors worked out by hand from sd-scripts' algorithm.

Bucket list (HEAD `make_bucket_resolutions`): area A = W*H; the square floor(sqrt(A)/step)*step; for every width w from
min to max by step, h = min(max, floor(floor(A / w) / step) * step), kept with its transpose when h >= min.
"""

import pytest

from sd_scripts.dataset.buckets import (
    make_bucket_resolutions,
    select_fixed_size,
    select_no_upscale_bucket,
    select_predefined_bucket,
)

BUCKETS_512 = [
    (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576), (512, 512),
    (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
]


def test_512_square_default_range_gives_the_17_kohya_buckets():
    assert make_bucket_resolutions((512, 512), 256, 1024, 64) == BUCKETS_512
    assert len(BUCKETS_512) == 17


def test_512_square_with_min_320_max_960_drops_buckets_thinner_than_min():
    # w=832..960 give h=256 < 320 and are dropped (HEAD's rule; v0.6.4 kept them).
    assert make_bucket_resolutions((512, 512), 320, 960, 64) == [
        (320, 704), (320, 768), (384, 640), (448, 576), (512, 512), (576, 448), (640, 384), (704, 320), (768, 320),
    ]


def test_768_square():
    # A = 589824: w=256..576 reach the 1024 cap; 640->896, 704->832, 768->768, 832->704, 896->640, 960->576, 1024->576.
    assert make_bucket_resolutions((768, 768), 256, 1024, 64) == [
        (256, 1024), (320, 1024), (384, 1024), (448, 1024), (512, 1024), (576, 960), (576, 1024), (640, 896),
        (704, 832), (768, 768), (832, 704), (896, 640), (960, 576), (1024, 256), (1024, 320), (1024, 384),
        (1024, 448), (1024, 512), (1024, 576),
    ]


def test_non_square_512x768():
    # A = 393216, square floor(627.06/64)*64 = 576; 448->832, 512->768, 576->640, 640->576, 704->512, 768->512,
    # 832->448, 896..1024->384.
    assert make_bucket_resolutions((512, 768), 256, 1024, 64) == [
        (256, 1024), (320, 1024), (384, 896), (384, 960), (384, 1024), (448, 832), (512, 704), (512, 768),
        (576, 576), (576, 640), (640, 576), (704, 512), (768, 512), (832, 448), (896, 384), (960, 384),
        (1024, 256), (1024, 320), (1024, 384),
    ]


@pytest.mark.parametrize(
    ("size", "bucket", "resized"),
    [
        ((1000, 1500), (384, 640), (427, 640)),  # AR .667: .6 is nearest; wider than bucket -> match heights
        ((512, 512), (512, 512), (512, 512)),  # an exact bucket is used as is
        ((640, 480), (576, 448), (597, 448)),  # AR 1.333: 1.286 is nearest
        ((300, 900), (256, 832), (277, 832)),  # AR .333: .308 is nearest
        ((2000, 500), (1024, 256), (1024, 256)),  # AR 4 exactly: match widths
        ((256, 1024), (256, 1024), (256, 1024)),
    ],
)
def test_assignment_to_the_512_list(size, bucket, resized):
    choice = select_predefined_bucket(size, BUCKETS_512)
    assert choice.bucket == bucket
    assert choice.resized_size == resized
    assert choice.ar_error == pytest.approx(bucket[0] / bucket[1] - size[0] / size[1])
    assert choice.resized_size[0] >= bucket[0] and choice.resized_size[1] >= bucket[1]  # covers the bucket


@pytest.mark.parametrize(
    ("size", "bucket", "resized"),
    [
        ((1000, 1500), (384, 576), (384, 576)),  # shrunk to area 512^2, both roundings agree -> height branch
        ((2000, 500), (1024, 256), (1024, 256)),
        ((640, 480), (512, 384), (512, 384)),  # width rounding gives 576x384 (AR 1.5), height rounding 512x384 wins
        ((300, 900), (256, 768), (256, 768)),  # 270000 px > A: width rounding 256x768 keeps AR exactly
        ((400, 300), (384, 256), (400, 300)),  # smaller than the area: never enlarged, floored to the step
        ((512, 512), (512, 512), (512, 512)),
        ((200, 100), (192, 64), (200, 100)),
    ],
)
def test_bucket_no_upscale(size, bucket, resized):
    choice = select_no_upscale_bucket(size, 512 * 512, 64)
    assert (choice.bucket, choice.resized_size) == (bucket, resized)


def test_no_upscale_marks_images_thinner_than_a_step_with_a_zero_bucket():
    assert select_no_upscale_bucket((40, 300), 512 * 512, 64).bucket == (0, 256)


def test_fixed_size_keeps_the_image_size_and_crops_to_the_resolution():
    choice = select_fixed_size((600, 520), (512, 512))
    assert (choice.bucket, choice.resized_size) == ((512, 512), (600, 520))
