"""The demo model and dataset: deterministic bytes, fast, reused when current, rebuilt when not."""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from sd_scripts.demo import IMAGE_COUNT, REPEATS_FOLDER, TRIGGER_WORD, build_demo
from sd_scripts.models import SD_V1, load_base_model


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_is_the_same_bytes_every_time_and_reused_at_once(tmp_path):
    started = time.perf_counter()
    build_demo(tmp_path / "a")
    first_build = time.perf_counter() - started
    build_demo(tmp_path / "b")
    assert all_bytes(tmp_path / "a") == all_bytes(tmp_path / "b")
    assert first_build < 30, first_build  # a few seconds alone; generous for 2 shared cores

    started = time.perf_counter()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")}
    build_demo(tmp_path / "a")
    assert time.perf_counter() - started < 1
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*")}  # nothing rewritten


def test_a_changed_or_missing_file_makes_the_demo_rebuild(tmp_path):
    paths = build_demo(tmp_path)
    original = all_bytes(tmp_path)
    caption = next((paths.images / REPEATS_FOLDER).glob("*.txt"))
    caption.write_text("edited")
    paths.model.unlink()
    build_demo(tmp_path)
    assert all_bytes(tmp_path) == original


def test_demo_dataset_and_prompts_carry_the_trigger_word(tmp_path):
    paths = build_demo(tmp_path)
    images = sorted((paths.images / REPEATS_FOLDER).glob("*.png"))
    assert len(images) == IMAGE_COUNT
    for image in images:
        assert Image.open(image).size == (64, 64)
        assert image.with_suffix(".txt").read_text().startswith(f"{TRIGGER_WORD}, a ")
    assert all(line.startswith(TRIGGER_WORD) for line in paths.prompts.read_text().splitlines())


def test_demo_model_has_the_sd15_block_layout(tmp_path):
    model = load_base_model(build_demo(tmp_path).model)
    assert model.version == SD_V1 and model.notes == []
    transformers = [name for name, m in model.unet.named_modules() if type(m).__name__ == "Transformer2DModel"]
    assert len(transformers) == 16  # SD1.5's count: kohya makes 16 x 12 = 192 UNet LoRA modules
    assert {"down_blocks.0.attentions.0", "mid_block.attentions.0", "up_blocks.3.attentions.2"} <= set(transformers)
    assert [type(b).__name__ for b in model.unet.down_blocks] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert model.vae.config.block_out_channels == [32, 32, 32, 32]  # 4 blocks: 64 px -> 8x8 latents
    assert model.text_encoder.config.num_attention_heads == 4
    assert model.text_encoder.config.hidden_act == "quick_gelu"
