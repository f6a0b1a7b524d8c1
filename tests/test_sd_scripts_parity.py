"""Where our training could differ from kohya-ss/sd-scripts, it does what sd-scripts does.

Every expected value here is written down from sd-scripts' own source (HEAD 48d368fa: library/train_util.py,
library/custom_train_functions.py, library/strategy_base.py, library/strategy_sd.py, networks/lora.py,
train_network.py) or from the formula it implements, never taken from our output.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from test_dataset_fixtures import settings_for, write_folder
from test_lora_fixtures import tiny_text_encoder, tiny_unet, tiny_vae

from sd_scripts.args import SAMPLERS as OFFERED_SAMPLERS
from sd_scripts.args import TrainArgs
from sd_scripts.dataset import cache_latents, epoch_batches, latents_npz_path, load_batch, scan_dataset
from sd_scripts.models import save_ldm_checkpoint
from sd_scripts.models.base_model import SD_V1, BaseModel
from sd_scripts.models.shipped_assets import CLIP_TOKENIZER_DIR
from sd_scripts.models.text_encoding import tokenize
from sd_scripts.models.tokenizers import load_tokenizer
from sd_scripts.networks.factory import network_from_file
from sd_scripts.networks.lora import LoRANetwork
from sd_scripts.training.noise import make_noise
from sd_scripts.training.sampling import SamplePrompt, SampleSettings, generate_samples, sample_scheduler



# --- 1. buckets off: cover the resolution, then centre-crop ----------------------------------------------------------

def sd_scripts_single_bucket(size: tuple[int, int], resolution: tuple[int, int]) -> tuple[tuple[int, int], int, int]:
    """BucketManager.select_bucket with the one predefined bucket `resolution` (make_buckets, enable_bucket=False),
    then trim_and_resize_if_required's centre trim: (resized size, left, top)."""
    width, height = size
    if width / height > resolution[0] / resolution[1]:
        scale = resolution[1] / height
    else:
        scale = resolution[0] / width
    resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    return resized, (resized[0] - resolution[0]) // 2, (resized[1] - resolution[1]) // 2


def stripes(size: tuple[int, int]) -> Image.Image:
    """An image whose every column differs, so that a wrong crop or scale shows."""
    width, height = size
    columns = (np.arange(width) * 255 // max(1, width - 1)).astype(np.uint8)
    rows = (np.arange(height) * 255 // max(1, height - 1)).astype(np.uint8)
    pixels = np.stack([np.tile(columns, (height, 1)), np.tile(rows[:, None], (1, width)),
                       np.full((height, width), 128, np.uint8)], axis=-1)
    return Image.fromarray(pixels)


@pytest.fixture
def wide_image_folder(tmp_path):
    folder = tmp_path / "1_wide"
    folder.mkdir()
    stripes((96, 64)).save(folder / "wide.png")
    (folder / "wide.txt").write_text("a wide picture", encoding="utf-8")
    return tmp_path


def test_without_buckets_cached_and_loaded_pixels_are_the_image_scaled_to_cover_then_centre_cropped(wide_image_folder):
    plan = scan_dataset(settings_for(wide_image_folder, resolution=(32, 32)))
    resized, left, top = sd_scripts_single_bucket((96, 64), (32, 32))
    assert (plan.images[0].bucket, plan.images[0].resized_size) == ((32, 32), resized)
    # shrinking: sd-scripts' resize_image uses area averaging (cv2 INTER_AREA; Pillow's BOX is the same average)
    scaled = np.asarray(stripes((96, 64)).resize(resized, Image.BOX)).astype(np.float32)
    expected = torch.from_numpy(scaled[top:top + 32, left:left + 32] / 127.5 - 1).permute(2, 0, 1)

    loaded = load_batch(plan, epoch_batches(plan, 1)[0], epoch=1, global_step=0).pixels[0]
    encoded = []
    cache_latents(plan, lambda pixels: encoded.append(pixels) or pixels[:, :, ::8, ::8], to_disk=False)
    assert torch.allclose(loaded, expected, atol=1e-6)
    assert torch.allclose(encoded[0][0], expected, atol=1e-6)


def test_without_buckets_a_smaller_image_is_enlarged_and_random_crop_cuts_from_the_unscaled_image(tmp_path):
    write_folder(tmp_path / "1_a", [(24, 16)])
    plan = scan_dataset(settings_for(tmp_path, resolution=(32, 32)))
    assert plan.images[0].resized_size == sd_scripts_single_bucket((24, 16), (32, 32))[0] == (48, 32)

    # sd-scripts' loader with random_crop and no buckets: a random window of the image as it is
    big = tmp_path / "big"
    write_folder(big / "1_a", [(96, 64)])
    plan = scan_dataset(settings_for(big, resolution=(32, 32), random_crop=True))
    assert (plan.images[0].bucket, plan.images[0].resized_size) == ((32, 32), (96, 64))


# --- 2. dim_from_weights with one part only ---------------------------------------------------------------------------

@pytest.mark.parametrize(("train_unet", "train_text_encoder", "kept"), [(True, False, "lora_unet"), (False, True, "lora_te")])
def test_a_network_continued_from_a_file_keeps_only_the_trained_part(train_unet, train_text_encoder, kept):
    text_encoder, unet = tiny_text_encoder(), tiny_unet()
    saved = LoRANetwork(text_encoder, unet, dim=4, alpha=2.0).state_dict()
    network = network_from_file(saved, text_encoder, unet, train_unet=train_unet, train_text_encoder=train_text_encoder)
    # sd-scripts' LoRANetwork.apply_to empties the list of the part that is not trained before registering modules
    assert set(network.state_dict()) == {key for key in saved if key.startswith(kept)}
    dropped = network.text_encoder_loras if train_unet else network.unet_loras
    assert dropped == []
    assert all(torch.equal(tensor, saved[key]) for key, tensor in network.state_dict().items())


# --- 3. captions through CLIP's text clean-up ------------------------------------------------------------------------

VOCAB = json.loads((CLIP_TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
BOS, EOS = VOCAB["<|startoftext|>"], VOCAB["<|endoftext|>"]


@pytest.mark.parametrize(
    ("caption", "words"),
    [
        # ftfy.fix_text uncurls quotes: it's -> "it" + "'s" (the BPE keeps 's as one token)
        ("it\u2019s a cat", ["it</w>", "'s</w>", "a</w>", "cat</w>"]),
        # full-width forms become ASCII
        ("\uff43\uff41\uff54\uff01", ["cat</w>", "!</w>"]),
        # HTML entities are unescaped (ftfy's unescape_html="auto": no "<" in the text)
        ("Tom &amp; Jerry", ["tom</w>", "&</w>", "jerry</w>"]),
        # whitespace_clean: runs of whitespace become one space, ends stripped
        ("  red\t\nhat ", ["red</w>", "hat</w>"]),
    ],
)
def test_captions_get_the_ids_of_sd_scripts_tokenizer(caption, words):
    """sd-scripts runs transformers 4's Python CLIPTokenizer with ftfy installed (its requirements pin ftfy 6.3.1):
    `whitespace_clean(ftfy.fix_text(text)).lower()` before the BPE; the ids are looked up in CLIP's vocabulary."""
    tokenizer = load_tokenizer(v2=False)
    ids = tokenize(tokenizer, [caption], None, v2=False)[0, 0].tolist()
    expected = [BOS] + [VOCAB[word] for word in words] + [EOS]
    assert ids == expected + [EOS] * (77 - len(expected))  # SD1 pads with the end token


def test_transformers_own_clip_tokenizer_does_not_clean_up_the_text():
    """Why the clean-up is ours: transformers 5's CLIPTokenizer only NFC-normalizes, collapses whitespace and
    lower-cases, even with ftfy installed."""
    ids = load_tokenizer(v2=False)("it\u2019s").input_ids
    assert ids != [BOS, VOCAB["it</w>"], VOCAB["'s</w>"], EOS]


# --- 4. noise offset together with multires noise --------------------------------------------------------------------

def test_noise_offset_comes_first_and_the_pyramid_noise_divides_everything_by_its_std():
    """get_noise_noisy_latents_and_timesteps: noise = randn; apply_noise_offset (noise + c * randn(B, C, 1, 1));
    then pyramid_noise_like (add upsampled randn * discount**i at size / r**i, r in [2, 4), stop at 1 px) and
    return noise / noise.std(). Our random numbers come from one generator, drawn in that order."""
    latents = torch.zeros(2, 4, 16, 12)
    offset, iterations, discount = 0.1, 3, 0.3
    generator = torch.Generator().manual_seed(7)
    expected = torch.randn(latents.shape, generator=generator)
    expected = expected + offset * torch.randn((2, 4, 1, 1), generator=generator)
    upsample = torch.nn.Upsample(size=(16, 12), mode="bilinear")
    for level in range(iterations):
        r = 2 + torch.rand((), generator=generator).item() * 2
        size = (max(1, int(16 / r**level)), max(1, int(12 / r**level)))
        expected = expected + upsample(torch.randn((2, 4, *size), generator=generator)) * discount**level
        if 1 in size:
            break
    expected = expected / expected.std()

    noise = make_noise(latents, torch.Generator().manual_seed(7), noise_offset=offset,
                       multires_iterations=iterations, multires_discount=discount)
    assert torch.allclose(noise, expected, atol=1e-6)
    assert noise.std().item() == pytest.approx(1.0, abs=1e-6)  # the offset is inside the division


# --- 6. latent cache files shared with sd-scripts ---------------------------------------------------------------------

def test_latent_cache_files_have_sd_scripts_plain_keys_and_one_written_by_sd_scripts_is_reused(tmp_path):
    write_folder(tmp_path / "1_a", [(64, 48)])
    settings = settings_for(tmp_path, resolution=(64, 48), flip_aug=True)
    plan = scan_dataset(settings)
    path = latents_npz_path(plan.images[0])
    assert path.name == "img00_0064x0048_sd.npz"  # SdSdxlLatentsCachingStrategy: _<WWWW>x<HHHH>_sd.npz

    # ours, read as sd-scripts' _default_load_latents_from_disk reads an SD file (latents_stride None: no suffix)
    cache_latents(plan, lambda pixels: pixels[:, :, ::8, ::8] + 1, to_disk=True)
    with np.load(path) as npz:
        assert set(npz.files) == {"latents", "original_size", "crop_ltrb", "latents_flipped"}
        assert npz["latents"].shape == (3, 6, 8)
        assert npz["original_size"].tolist() == [64, 48]
        assert npz["crop_ltrb"].tolist() == [0, 0, 64, 48]  # BucketManager.get_crop_ltrb for an exact fit

    # sd-scripts' save_latents_to_disk for SD: the same plain keys; our cache takes it as it is
    theirs = {"latents": np.full((4, 6, 8), 0.5, np.float32), "original_size": np.array([64, 48]),
              "crop_ltrb": np.array([0, 0, 64, 48]), "latents_flipped": np.full((4, 6, 8), -0.5, np.float32)}
    np.savez(path, **theirs)
    calls = []
    cache = cache_latents(scan_dataset(settings), lambda pixels: calls.append(pixels) or pixels, to_disk=True)
    assert calls == []
    assert torch.equal(cache.get(0, flipped=False), torch.from_numpy(theirs["latents"]))
    assert torch.equal(cache.get(0, flipped=True), torch.from_numpy(theirs["latents_flipped"]))


def test_an_old_sd_scripts_cache_file_next_to_the_image_is_used(tmp_path):
    """get_latents_npz_path: `<stem>.npz` of sd-scripts' first versions wins when it exists."""
    write_folder(tmp_path / "1_a", [(64, 64)])
    plan = scan_dataset(settings_for(tmp_path, resolution=(64, 64)))
    old = plan.images[0].path.with_suffix(".npz")
    np.savez(old, latents=np.zeros((4, 8, 8), np.float32), original_size=np.array([64, 64]),
             crop_ltrb=np.array([0, 0, 64, 64]))
    assert latents_npz_path(plan.images[0]) == old


# --- 7. what a seed reproduces ------------------------------------------------------------------------------------------

def sd_scripts_initial_weights(network: LoRANetwork, seed: int) -> dict[str, torch.Tensor]:
    """LoRAModule.__init__ from torch.manual_seed(seed), module after module: torch.nn.Linear/Conv2d for lora_down
    and lora_up (their default init draws), then kaiming_uniform_(lora_down, a=sqrt(5)) and zeros on lora_up."""
    torch.manual_seed(seed)
    weights = {}
    for lora in network.text_encoder_loras + network.unet_loras:
        down, up = lora.lora_down.weight, lora.lora_up.weight
        if down.ndim == 4:
            torch.nn.Conv2d(down.shape[1], down.shape[0], down.shape[2:], bias=False)
            torch.nn.Conv2d(up.shape[1], up.shape[0], 1, bias=False)
        else:
            torch.nn.Linear(down.shape[1], down.shape[0], bias=False)
            torch.nn.Linear(up.shape[1], up.shape[0], bias=False)
        drawn = torch.empty(down.shape)
        torch.nn.init.kaiming_uniform_(drawn, a=math.sqrt(5))
        weights[f"{lora.lora_name}.lora_down.weight"] = drawn
        weights[f"{lora.lora_name}.lora_up.weight"] = torch.zeros(up.shape)
    return weights


def test_the_seed_alone_decides_the_initial_lora_weights_drawn_as_sd_scripts_draws_them(tmp_path, monkeypatch):
    """The session loads a model that draws from torch's generator while it is built (as sd-scripts' loader does);
    the LoRA's initial weights are still those drawn from the seed, in LoRANetwork's order."""
    from sd_scripts.training import loop

    def tiny_model(path) -> BaseModel:
        return BaseModel(unet=tiny_unet(), vae=tiny_vae(), text_encoder=tiny_text_encoder(),
                         tokenizer=load_tokenizer(False), version=SD_V1, v2=False, v_parameterization=False, path=path)

    def load_drawing_model(path, **_):
        torch.rand(1000)  # a loader that consumes random numbers
        return tiny_model(path)

    write_folder(tmp_path / "images" / "1_a", [(64, 64)])
    model_file = tmp_path / "model.safetensors"  # a real file: its header is checked before the model loads
    save_ldm_checkpoint(tiny_model(model_file), model_file)
    monkeypatch.setattr(loop, "load_base_model", load_drawing_model)

    def initial_state(seed: int) -> dict[str, torch.Tensor]:
        args = TrainArgs(pretrained_model_name_or_path=str(model_file), train_data_dir=str(tmp_path / "images"),
                         output_dir=str(tmp_path / f"out{seed}"), resolution="64", seed=seed, max_train_steps=1,
                         optimizer_type="AdamW")
        network = loop.TrainingSession(args, lambda event: None, threading.Event()).network
        return {key: value.cpu() for key, value in network.state_dict().items() if not key.endswith("alpha")}, network

    first, network = initial_state(31)
    expected = sd_scripts_initial_weights(network, 31)
    assert first.keys() == expected.keys()
    assert all(torch.equal(first[key], expected[key]) for key in expected)
    again, _ = initial_state(31)
    other, _ = initial_state(32)
    assert all(torch.equal(again[key], first[key]) for key in first)
    assert not all(torch.equal(other[key], first[key]) for key in first)


# --- 8. the command line keeps the libraries' import-time notices quiet -----------------------------------------------

def test_the_command_line_trainer_quiets_the_library_notices_before_anything_imports_them(tmp_path, monkeypatch):
    """`python -m sd_scripts.train` and the wizard share one function, called before the heavy imports (a subprocess
    showing the missing notices would cost this suite 10-20 s of imports; this checks the wiring instead)."""
    import logging

    import sd_scripts.train
    import wizard.app
    from sd_scripts.notices import quiet_library_notices

    assert wizard.app.quiet_library_notices is quiet_library_notices
    order = []
    monkeypatch.setattr(sd_scripts.train, "quiet_library_notices", lambda: order.append("quiet"))
    monkeypatch.setattr(sd_scripts.train, "train", lambda *_, **__: order.append("train") or TrainResultStub())
    config = tmp_path / "run.toml"
    config.write_text('pretrained_model_name_or_path = "m.safetensors"\n', encoding="utf-8")
    assert sd_scripts.train.main(["--config_file", str(config)]) == 0
    assert order == ["quiet", "train"]

    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    quiet_library_notices()
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    assert logging.getLogger("bitsandbytes").level == logging.ERROR


class TrainResultStub:
    ok = True


# --- 9. every offered sampler renders through the diffusers scheduler sd-scripts maps it to --------------------------

# train_util.get_my_scheduler: sampler name -> diffusers scheduler class (k_ aliases the same)
SD_SCRIPTS_SCHEDULERS = {
    "ddim": "DDIMScheduler", "pndm": "PNDMScheduler", "lms": "LMSDiscreteScheduler", "k_lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler", "k_euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler", "k_euler_a": "EulerAncestralDiscreteScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler", "dpmsolver++": "DPMSolverMultistepScheduler",
    "dpmsingle": "DPMSolverSinglestepScheduler", "heun": "HeunDiscreteScheduler",
    "dpm_2": "KDPM2DiscreteScheduler", "k_dpm_2": "KDPM2DiscreteScheduler",
    "dpm_2_a": "KDPM2AncestralDiscreteScheduler", "k_dpm_2_a": "KDPM2AncestralDiscreteScheduler",
}


@pytest.fixture(scope="module")
def tiny_parts():
    return tiny_unet(), tiny_vae(), tiny_text_encoder(), load_tokenizer(False)


@pytest.mark.parametrize("sampler", OFFERED_SAMPLERS)
def test_every_offered_sampler_makes_an_image_with_sd_scripts_scheduler(sampler, tiny_parts, tmp_path):
    scheduler = sample_scheduler(sampler, v_parameterization=False)
    assert type(scheduler).__name__ == SD_SCRIPTS_SCHEDULERS[sampler]
    if sampler in ("dpmsolver", "dpmsolver++"):
        assert scheduler.config.algorithm_type == sampler
    if sampler.startswith("k_") and sampler.removeprefix("k_") in OFFERED_SAMPLERS:
        return  # an alias: its scheduler renders in the test of its plain name
    unet, vae, text_encoder, tokenizer = tiny_parts
    steps = 4 if sampler == "pndm" else 2  # PNDM's four Runge-Kutta warm-up steps need four steps at least
    made = generate_samples(
        [SamplePrompt("a red square", width=64, height=64, steps=steps, seed=1)],
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        settings=SampleSettings(sampler=sampler, v2=False, v_parameterization=False, clip_skip=None,
                                max_token_length=None, default_seed=1),
        autocast=contextlib.nullcontext,
        folder=tmp_path, file_stem="s",
    )
    with Image.open(made[0][0]) as image:
        assert image.size == (64, 64)
        assert np.asarray(image).std() > 0  # a real picture, not an empty frame
