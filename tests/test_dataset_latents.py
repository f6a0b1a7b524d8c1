"""Latent caching: in memory, to sd-scripts' `_sd.npz` files (reused when valid), flip_aug, batching by bucket."""

import numpy as np
import pytest
import torch
from test_dataset_fixtures import settings_for, write_folder

from sd_scripts.dataset import cache_latents, ensure_latents_cacheable, epoch_batches, latents_npz_path, load_batch
from sd_scripts.dataset import scan_dataset
from sd_scripts.errors import UserFacingError



class FakeVae:
    """Averages 8x8 pixel blocks into 4 channels; counts the batches it is given."""

    def __init__(self):
        self.batch_sizes = []

    def __call__(self, pixels):
        self.batch_sizes.append(pixels.shape[0])
        pooled = torch.nn.functional.avg_pool2d(pixels, 8)
        return torch.cat([pooled, pooled.mean(dim=1, keepdim=True)], dim=1)


@pytest.fixture
def folder(tmp_path):
    write_folder(tmp_path / "2_a", [(64, 64), (64, 64), (128, 32)], ["a", "b", "c"])
    return tmp_path


def bucket_settings(folder, **overrides):
    return settings_for(folder, resolution=(64, 64), enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128,
                        bucket_reso_steps=32, **overrides)


def test_in_memory_cache_feeds_load_batch(folder):
    plan = scan_dataset(bucket_settings(folder, train_batch_size=2))
    vae = FakeVae()
    cache = cache_latents(plan, vae, to_disk=False, vae_batch_size=4)
    assert sorted(vae.batch_sizes) == [1, 2]  # one batch per bucket: 64x64 (2 images) and 128x32 (1 image)
    for spec in epoch_batches(plan, 1):
        batch = load_batch(plan, spec, epoch=1, global_step=0, latent_cache=cache)
        pixels = load_batch(plan, spec, epoch=1, global_step=0).pixels
        assert batch.pixels is None
        assert torch.allclose(batch.latents, vae(pixels), atol=1e-6)
    assert not list(folder.rglob("*.npz"))


def test_disk_cache_is_written_as_sd_scripts_names_it_and_reused(folder):
    plan = scan_dataset(bucket_settings(folder, flip_aug=True))
    vae = FakeVae()
    cache_latents(plan, vae, to_disk=True, vae_batch_size=1)
    assert len(vae.batch_sizes) == 6  # 3 images, each also flipped
    wide = next(image for image in plan.images if image.size == (128, 32))
    path = latents_npz_path(wide)
    assert path.name == "img02_0128x0032_sd.npz"
    with np.load(path) as npz:  # sd-scripts' SD keys: no _<h>x<w> suffix (that is for FLUX/SD3 only)
        assert sorted(npz.files) == ["crop_ltrb", "latents", "latents_flipped", "original_size"]
        assert npz["latents"].shape == (4, 4, 16)
        assert npz["original_size"].tolist() == [128, 32]
        assert np.allclose(npz["latents_flipped"], npz["latents"][:, :, ::-1], atol=1e-6)

    again = FakeVae()
    cache = cache_latents(scan_dataset(bucket_settings(folder, flip_aug=True)), again, to_disk=True)
    assert again.batch_sizes == []  # every file was valid and reused
    spec = epoch_batches(plan, 1)[0]
    assert load_batch(plan, spec, epoch=1, global_step=0, latent_cache=cache).latents.shape[1] == 4


def test_disk_cache_of_another_size_is_encoded_again_and_replaced(folder):
    cache_latents(scan_dataset(bucket_settings(folder, flip_aug=True)), FakeVae(), to_disk=True)
    smaller = scan_dataset(settings_for(folder, resolution=(32, 32), enable_bucket=True, min_bucket_reso=32,
                                        max_bucket_reso=128, bucket_reso_steps=32))
    vae = FakeVae()
    cache_latents(smaller, vae, to_disk=True)
    assert len(vae.batch_sizes) == 3
    with np.load(latents_npz_path(smaller.images[0])) as npz:
        assert npz["latents"].shape == (4, 4, 4)
        assert "latents_flipped" not in npz.files  # the 8x8 mirror image would not match the new latents


def test_flip_aug_needs_the_flipped_latents_in_the_file(folder):
    cache_latents(scan_dataset(bucket_settings(folder)), FakeVae(), to_disk=True)
    vae = FakeVae()
    cache_latents(scan_dataset(bucket_settings(folder, flip_aug=True)), vae, to_disk=True)
    assert len(vae.batch_sizes) == 6


@pytest.mark.parametrize(("option", "words"), [("color_aug", "color augmentation"), ("random_crop", "random crop")])
def test_caching_is_refused_with_pixel_changing_augmentation(folder, option, words):
    plan = scan_dataset(bucket_settings(folder, **{option: True}))
    with pytest.raises(UserFacingError, match=f"cannot be cached while {words} is on"):
        ensure_latents_cacheable(plan)
    with pytest.raises(UserFacingError):
        cache_latents(plan, FakeVae(), to_disk=False)
