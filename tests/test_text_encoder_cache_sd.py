"""Text-encoder outputs cached for SD 1.x/2.x too (issue 14: "cached text-encoder outputs when the text encoder is
frozen"): a U-Net-only run encodes each caption once, before training, and its steps never run the text encoder.

The cached context is what the steps would have computed (the text encoder is frozen), so a run with the cache
trains the LoRA a run without it trains; the files beside the images hold the context of each caption after
clip_skip, and are encoded again when the caption, the base model, the token length or clip_skip differ.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import torch
from safetensors.torch import load_file

import sd_scripts.training.loop as loop
from sd_scripts.dataset import scan_dataset
from sd_scripts.dataset.text_encoder_cache import cache_text_encoder_outputs, te_outputs_npz_path
from sd_scripts.models import load_base_model
from sd_scripts.models.text_encoding import encode_tokens, tokenize
from sd_scripts.train import train
from test_dataset_fixtures import settings_for, write_folder
from test_train_fixtures import demo_args, one_repeat_images  # noqa: F401 (a fixture)


def test_a_unet_only_run_with_cached_outputs_trains_the_lora_of_one_that_encodes_every_step(
        demo, one_repeat_images, tmp_path, monkeypatch):  # noqa: F811
    images = tmp_path / "images"  # a copy: the cache files are written beside the images
    shutil.copytree(one_repeat_images, images)
    settings = demo_args(demo, images, tmp_path, max_train_steps=3, network_train_unet_only=True,
                         cache_latents=True, clip_skip=2, output_name="encoding")
    encoded_in_steps = []
    encode_captions = loop.TrainingSession.encode_captions

    def counted(session, captions):
        encoded_in_steps.append(torch.is_grad_enabled())  # a step encodes with gradients on; the cache without
        return encode_captions(session, captions)

    monkeypatch.setattr(loop.TrainingSession, "encode_captions", counted)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encoding = train(settings)
        steps_encoded = encoded_in_steps.count(True)
        encoded_in_steps.clear()
        cached = train(dataclasses.replace(settings, output_name="cached", cache_text_encoder_outputs=True,
                                           cache_text_encoder_outputs_to_disk=True))
    finally:
        torch.set_num_threads(threads)
    assert encoding.ok and cached.ok, (encoding.message, cached.message)
    assert steps_encoded == 3 and True not in encoded_in_steps  # every step encoded; with the cache, none
    first, second = load_file(encoding.lora_path), load_file(cached.lora_path)
    assert first.keys() == second.keys() and not any(key.startswith("lora_te") for key in first)
    weights = [key for key in first if not key.endswith(".alpha")]
    moved = sum((first[key] - second[key]).pow(2).sum().item() for key in weights) ** 0.5
    size = sum(first[key].pow(2).sum().item() for key in weights) ** 0.5
    assert 0 < size and moved < 1e-5 * size, (moved, size)

    # the file beside an image holds its caption's context, from the penultimate layer (clip_skip 2)
    model = load_base_model(str(demo.model))
    image = sorted(path for path in next(images.iterdir()).iterdir() if path.suffix == ".png")[0]
    caption = image.with_suffix(".txt").read_text(encoding="utf-8").strip()
    with np.load(te_outputs_npz_path(image, sdxl=False)) as npz:
        assert str(npz["caption"]) == caption and str(npz["clip_skip"]) == "2"
        with torch.no_grad():
            context = encode_tokens(model.text_encoder, tokenize(model.tokenizer, [caption], None, False),
                                    clip_skip=2, max_token_length=None, v2=False)
        np.testing.assert_allclose(npz["hidden_state"], context[0].numpy(), atol=1e-5)


def test_sd_cache_files_are_encoded_again_for_another_clip_skip(tmp_path):
    write_folder(tmp_path / "1_a", [(64, 64), (64, 64)], ["one", "two"])
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    encoded: list[list[str]] = []

    def encode(captions):
        encoded.append(captions)
        return (torch.full((len(captions), 77, 4), float(len(encoded))),)

    def cache(clip_skip=None):
        return cache_text_encoder_outputs(plan, encode, sdxl=False, to_disk=True, base_model="a.safetensors",
                                          token_length=77, batch_size=4, clip_skip=clip_skip)

    (context,) = cache().get([0, 1])
    assert context.shape == (2, 77, 4) and len(encoded) == 1
    assert cache().get([1])[0][0, 0, 0] == 1 and len(encoded) == 1  # reused
    cache(clip_skip=2)
    assert encoded[-1] == ["one", "two"] and len(encoded) == 2
    assert te_outputs_npz_path(plan.images[0].path, sdxl=False).name.endswith("_te_outputs_sd.npz")
    assert not te_outputs_npz_path(plan.images[0].path, sdxl=True).exists()  # never taken for SDXL's


def test_the_wizard_caches_them_for_every_unet_only_run_with_fixed_captions():
    from wizard.config import TrainConfig
    from wizard.translate import to_train_args

    config = TrainConfig(cuda=True)
    assert not config.get("cache_text_encoder_outputs")  # the text encoder trains by default: nothing to cache
    config.set("unet_only", True)
    assert config.get("cache_text_encoder_outputs") and to_train_args(config).cache_text_encoder_outputs
    config.set("shuffle_captions", True)  # captions that change per step cannot be cached
    assert not config.get("cache_text_encoder_outputs")
