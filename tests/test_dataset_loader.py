"""The DataLoader that prepares batches ahead of the step: the same batches with any number of workers, forked or
spawned, the same LoRA after training, resuming mid-epoch, errors from workers, and the gradient-accumulation
division of an epoch's last, shorter group (sd-scripts' `accelerator.backward` divides by the accumulation steps)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from test_dataset_fixtures import settings_for, write_folder
from test_train_fixtures import demo_args, one_repeat_images  # noqa: F401 (fixture)

from sd_scripts.dataset import LatentCache, cache_latents, epoch_batches, load_batch, scan_dataset
from sd_scripts.dataset.loader import BatchLoader, loading_workers
from sd_scripts.errors import UserFacingError
from sd_scripts.train import train
from sd_scripts.training.loop import TrainingSession
from sd_scripts.training.precision import create_accelerator


ACCUMULATION = 2
CAPTIONS = [f"name{number}, red, round, small, shiny, {number}" for number in range(5)]


@pytest.fixture(scope="module")
def augmented_plan(tmp_path_factory):
    """Every per-batch random choice on: flip, random crop, colour, caption shuffle and tag dropout, token warmup."""
    root = tmp_path_factory.mktemp("loader")
    write_folder(root / "2_a", [(80, 64)] * 5, CAPTIONS)
    return scan_dataset(settings_for(
        root, resolution=(64, 64), train_batch_size=2, flip_aug=True, random_crop=True, color_aug=True,
        shuffle_caption=True, keep_tokens=1, caption_tag_dropout_rate=0.2, token_warmup_step=4, token_warmup_min=1,
    ))


def expected_batches(plan, epoch, first_step, first=0):
    """The batches of `epoch` loaded one by one in this process; batch i is in step first_step + i // ACCUMULATION."""
    specs = epoch_batches(plan, epoch)
    return [load_batch(plan, spec, epoch, first_step + (spec.index - first) // ACCUMULATION) for spec in specs[first:]]


def loaded(loader, plan, epoch, first_step, first=0):
    groups = list(loader.epoch(epoch, epoch_batches(plan, epoch), first=first, first_step=first_step,
                               accumulation=ACCUMULATION))
    assert [len(group) for group in groups][:-1] == [ACCUMULATION] * (len(groups) - 1)
    return [batch for group in groups for batch in group]


def assert_same(actual, expected):
    assert len(actual) == len(expected)
    for mine, theirs in zip(actual, expected):
        assert mine.captions == theirs.captions
        assert mine.image_paths == theirs.image_paths
        assert torch.equal(mine.loss_weights, theirs.loss_weights)
        for name in ("pixels", "latents"):
            assert (getattr(mine, name) is None) == (getattr(theirs, name) is None)
            if getattr(mine, name) is not None:
                assert torch.equal(getattr(mine, name), getattr(theirs, name))


# --- the same batches whatever the workers ------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_any_number_of_workers_gives_the_batches_of_the_training_process(augmented_plan, workers):
    steps_in_epoch_1 = -(-augmented_plan.batches_per_epoch // ACCUMULATION)
    expected = expected_batches(augmented_plan, 1, 0) + expected_batches(augmented_plan, 2, steps_in_epoch_1)
    # The token warmup reads the step each batch belongs to: the captions grow from one step to the next.
    assert len(expected[0].captions[0].split(", ")) < len(expected[-1].captions[0].split(", "))
    random_state = torch.get_rng_state()
    loader = BatchLoader(augmented_plan, None, num_workers=workers, persistent_workers=True, pin_memory=False)
    assert loader.num_workers == min(workers, os.cpu_count())
    try:
        batches = loaded(loader, augmented_plan, 1, 0) + loaded(loader, augmented_plan, 2, steps_in_epoch_1)
    finally:
        loader.close()
    assert_same(batches, expected)
    assert torch.equal(torch.get_rng_state(), random_state)  # the network's dropout draws stay as they were


def test_spawned_workers_load_the_same_batches_and_stop_on_close(augmented_plan):
    """Windows spawns its workers: the plan and the requests are pickled, a persistent worker serves two epochs."""
    loader = BatchLoader(augmented_plan, None, num_workers=1, persistent_workers=True, pin_memory=False,
                         multiprocessing_context="spawn")
    try:
        first = loaded(loader, augmented_plan, 1, 0)
        workers = multiprocessing.active_children()
        second = loaded(loader, augmented_plan, 2, 3)
        assert multiprocessing.active_children() == workers  # the same worker process served both epochs
    finally:
        loader.close()
    assert not multiprocessing.active_children()
    assert_same(first + second, expected_batches(augmented_plan, 1, 0) + expected_batches(augmented_plan, 2, 3))


def test_workers_read_cached_latent_files(tmp_path):
    write_folder(tmp_path / "1_a", [(64, 64)] * 3, ["a", "b", "c"])
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64), flip_aug=True))

    def encode(pixels):  # a stand-in VAE: 4 channels at an eighth of the size
        return torch.nn.functional.avg_pool2d(pixels, 8).repeat(1, 2, 1, 1)[:, :4]

    cache = cache_latents(plan, encode, to_disk=True)
    loader = BatchLoader(plan, cache, num_workers=1, persistent_workers=False, pin_memory=False)
    assert loader.num_workers == 1
    try:
        batches = loaded(loader, plan, 1, 0)
    finally:
        loader.close()
    expected = [load_batch(plan, spec, 1, spec.index // ACCUMULATION, cache) for spec in epoch_batches(plan, 1)]
    assert_same(batches, expected)
    assert batches[0].latents.shape == (1, 4, 8, 8)


def test_latents_in_memory_are_loaded_without_workers(augmented_plan):
    """Workers would only copy the tensors of an in-memory cache; images and the disk cache get them (<= CPUs)."""
    in_memory = LatentCache(in_memory={0: (torch.zeros(4, 8, 8), None)})
    loader = BatchLoader(augmented_plan, in_memory, num_workers=2, persistent_workers=True, pin_memory=False)
    assert loader.num_workers == 0
    assert loading_workers(2, latents_in_memory=True) == 0
    assert loading_workers(1, latents_in_memory=False) == 1
    assert loading_workers(64, latents_in_memory=False) == os.cpu_count()


# --- resume and errors --------------------------------------------------------------------------------------------
def test_resuming_mid_epoch_loads_the_rest_of_the_uninterrupted_epoch(augmented_plan):
    steps_in_epoch_1 = -(-augmented_plan.batches_per_epoch // ACCUMULATION)
    uninterrupted = expected_batches(augmented_plan, 2, steps_in_epoch_1)
    resumed_at = ACCUMULATION  # one optimizer step of epoch 2 was done before the stop
    loader = BatchLoader(augmented_plan, None, num_workers=1, persistent_workers=False, pin_memory=False)
    try:
        resumed = loaded(loader, augmented_plan, 2, steps_in_epoch_1 + 1, first=resumed_at)
    finally:
        loader.close()
    assert_same(resumed, uninterrupted[resumed_at:])


def test_a_damaged_image_found_by_a_worker_fails_with_one_sentence(tmp_path):
    paths = write_folder(tmp_path / "1_a", [(64, 64)] * 2, ["a", "b"])
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    paths[1].write_bytes(paths[1].read_bytes()[:100])  # damaged after the scan, as a file changed during training
    loader = BatchLoader(plan, None, num_workers=1, persistent_workers=False, pin_memory=False)
    try:
        with pytest.raises(UserFacingError) as raised:
            loaded(loader, plan, 1, 0)
    finally:
        loader.close()
    assert str(paths[1]) in raised.value.message and "\n" not in raised.value.message


# --- training -----------------------------------------------------------------------------------------------------
def test_the_same_seed_trains_the_same_lora_with_0_1_and_2_workers(demo, one_repeat_images, tmp_path):  # noqa: F811
    tensors = []
    for workers in (0, 1, 2):
        args = demo_args(demo, one_repeat_images, tmp_path / str(workers), max_train_steps=2, train_batch_size=2,
                         flip_aug=True, shuffle_caption=True, max_data_loader_n_workers=workers,
                         persistent_data_loader_workers=workers == 1)
        result = train(args)
        assert result.ok, result.message
        tensors.append(load_file(result.lora_path))
    first = tensors[0]
    assert any(first[key].abs().sum() > 0 for key in first if "lora_up" in key)  # it trained
    for other in tensors[1:]:
        assert other.keys() == first.keys()
        assert all(other[key].numpy().tobytes() == first[key].numpy().tobytes() for key in first)


def test_the_last_shorter_accumulation_group_is_divided_by_the_accumulation_steps():
    """sd-scripts: `accelerator.backward(loss)` divides every batch's loss by gradient_accumulation_steps, also in an
    epoch's last group of fewer batches; one SGD step (lr 1) then moves w by sum(grad_b) / steps."""
    steps, targets = 3, [torch.tensor([1.0, -2.0]), torch.tensor([0.5, 4.0])]  # a last group of 2 batches of 3
    weight = torch.nn.Parameter(torch.tensor([0.25, 0.75]))
    module = torch.nn.Module()
    module.weight = weight
    accelerator = create_accelerator("no")
    prepared, optimizer = accelerator.prepare(module, torch.optim.SGD([weight], lr=1.0))
    session = SimpleNamespace(
        accelerator=accelerator, prepared_network=prepared, optimizer=optimizer,
        lr_scheduler=torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0),
        args=SimpleNamespace(gradient_accumulation_steps=steps, max_grad_norm=0.0),
        position=SimpleNamespace(global_step=0), trainable_parameters=[weight],
        batch_loss=lambda target: ((weight - target) ** 2).sum(), skips_on_device=False,
        network=SimpleNamespace(weights_cast_once=lambda dtype: contextlib.nullcontext()), network_cast_dtype=None,
    )
    start = weight.detach().clone()
    loss = TrainingSession.optimizer_step(session, targets)
    gradients = [2 * (start - target) for target in targets]  # d/dw of (w - t)^2
    torch.testing.assert_close(weight.detach(), start - sum(gradients) / steps)
    assert loss.item() == pytest.approx(sum(((start - target) ** 2).sum().item() for target in targets) / len(targets))


def test_the_summary_says_when_the_worker_settings_are_not_used():
    from wizard.config import TrainConfig
    from wizard.summary import summary_rows

    def rows(**values):
        config = TrainConfig(cuda=True)
        for name, value in values.items():
            config.set(name, value)
        return {row.field: row.value for row in summary_rows(config) if row.field.endswith("workers")}

    assert rows(cache_latents=False, num_workers=1) == {"num_workers": "1", "persistent_workers": "yes"}
    assert rows(cache_latents_to_disk=True, num_workers=2) == {"num_workers": "2", "persistent_workers": "yes"}
    assert rows(cache_latents=False, num_workers=0)["persistent_workers"] == "yes (not used with 0 workers)"
    in_memory = rows(cache_latents=True, cache_latents_to_disk=False, num_workers=2)
    assert all(value.endswith("(not used: latents are cached in memory, batches are loaded without workers)")
               for value in in_memory.values())
