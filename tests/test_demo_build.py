"""The demo models (SD1.5 and SDXL) and dataset: deterministic bytes, reused untouched when current, rebuilt when not."""

from __future__ import annotations

import shutil

from PIL import Image
from test_demo_fixtures import all_bytes

from sd_scripts import demo_pretraining
from sd_scripts.demo import IMAGE_COUNT, REPEATS_FOLDER, TRIGGER_WORD, build_demo
from sd_scripts.models import SD_V1, SDXL, load_base_model


def test_demo_is_reused_untouched_when_current(demo):
    first = demo.model.parent
    before = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    build_demo(first)
    assert before == {p: p.stat().st_mtime_ns for p in first.rglob("*")}  # nothing rewritten


def test_a_changed_or_missing_file_rebuilds_the_demo_to_the_same_bytes(tmp_path, monkeypatch):
    # One rebuild shows both: a second pre-training from nothing gives the very bytes of the first (the model file is
    # gone, so it is trained again), and a damaged copy is repaired rather than trusted. The pre-training's length
    # does not change its code path (the full one is the session's `demo` fixture): 2 steps each, on one thread.
    monkeypatch.setattr(demo_pretraining, "VAE_STEPS", 2)
    monkeypatch.setattr(demo_pretraining, "UNET_STEPS", 2)
    monkeypatch.setattr(demo_pretraining, "PRETRAINING_THREADS", 1)
    first = build_demo(tmp_path / "first")
    root = tmp_path / "demo"
    shutil.copytree(first.model.parent, root)
    original = all_bytes(root)
    caption = next((root / "images" / REPEATS_FOLDER).glob("*.txt"))
    caption.write_text("edited")
    (root / first.model.name).unlink()
    build_demo(root)
    assert all_bytes(root) == original


def test_demo_dataset_and_prompts_carry_the_trigger_word(demo):
    paths = demo
    images = sorted((paths.images / REPEATS_FOLDER).glob("*.png"))
    assert len(images) == IMAGE_COUNT
    for image in images:
        assert Image.open(image).size == (64, 64)
        assert image.with_suffix(".txt").read_text().startswith(f"{TRIGGER_WORD}, a ")
    assert all(line.startswith(TRIGGER_WORD) for line in paths.prompts.read_text().splitlines())


def test_demo_model_has_the_sd15_block_layout(demo):
    model = load_base_model(demo.model)
    assert model.version == SD_V1 and model.notes == []
    transformers = [name for name, m in model.unet.named_modules() if type(m).__name__ == "Transformer2DModel"]
    assert len(transformers) == 16  # SD1.5's count: kohya makes 16 x 12 = 192 UNet LoRA modules
    assert {"down_blocks.0.attentions.0", "mid_block.attentions.0", "up_blocks.3.attentions.2"} <= set(transformers)
    assert [type(b).__name__ for b in model.unet.down_blocks] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert model.vae.config.block_out_channels == [32, 32, 32, 32]  # 4 blocks: 64 px -> 8x8 latents
    assert model.text_encoder.config.num_attention_heads == 4
    assert model.text_encoder.config.hidden_act == "quick_gelu"


def test_the_sdxl_demo_is_deterministic_loads_as_sdxl_and_shares_a_root_with_sd15(demo, tmp_path, monkeypatch):
    # the pre-training's length does not change its code path: 2 steps each, on one thread (two threads wait on each
    # other on a busy machine), keep this test to seconds
    monkeypatch.setattr(demo_pretraining, "VAE_STEPS", 2)
    monkeypatch.setattr(demo_pretraining, "UNET_STEPS", 2)
    monkeypatch.setattr(demo_pretraining, "PRETRAINING_THREADS", 1)
    root = tmp_path / "shared"
    # the SD1.5 demo alone (a developer's WIZARD_TEST_DEMO_ROOT may hold the full SDXL demo beside it)
    shutil.copytree(demo.model.parent, root, ignore=shutil.ignore_patterns("tiny_sdxl.safetensors", "demo_sdxl.json"))
    sd15_before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    paths = build_demo(root, family="sdxl")
    assert (paths.model, paths.images) == (root / "tiny_sdxl.safetensors", root / "images")
    assert {p: p.stat().st_mtime_ns for p in sd15_before} == sd15_before  # the SD1.5 demo is untouched...
    assert build_demo(root).model == root / "tiny_sd15.safetensors"
    assert {p: p.stat().st_mtime_ns for p in sd15_before} == sd15_before  # ...and still current
    assert build_demo(tmp_path / "alone", family="sdxl").model.read_bytes() == paths.model.read_bytes()

    model = load_base_model(paths.model)
    assert (model.version, model.is_sdxl, model.notes) == (SDXL, True, [])
    assert model.vae.config.block_out_channels == [32, 32, 32, 32]  # 64 px -> 8x8 latents, as the SD1.5 demo
    assert [type(b).__name__ for b in model.unet.down_blocks] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
