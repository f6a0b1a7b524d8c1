"""The shipped CLIP tokenizer files: OpenAI's vocabulary, SD1/SD2 padding, sd-scripts' tokenizer_cache_dir."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sd_scripts.models.shipped_assets import ASSETS_DIR, CLIP_TOKENIZER_DIR
from sd_scripts.models.tokenizers import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def test_shipped_vocabulary_gives_clips_well_known_ids():
    sd1, sd2 = load_tokenizer(v2=False), load_tokenizer(v2=True)
    assert sd1("a photo of a cat").input_ids == CAT_IDS
    assert sd2("A Photo of a CAT").input_ids == CAT_IDS
    assert len(sd1) == 49408
    assert (sd1.bos_token_id, sd1.eos_token_id, sd1.pad_token_id) == (49406, 49407, 49407)
    assert (sd2.eos_token_id, sd2.pad_token_id, sd2.model_max_length) == (49407, 0, 77)
    assert sd2("a cat", padding="max_length", max_length=6).input_ids == [49406, 320, 2368, 49407, 0, 0]


def test_shipped_vocabulary_is_rebuilt_by_the_provenance_script_from_its_merges():
    spec = importlib.util.spec_from_file_location("build_clip_tokenizer", ROOT / "tools" / "build_clip_tokenizer.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    merges = (CLIP_TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert len(merges) == script.NUM_MERGES == 48894
    shipped = json.loads((CLIP_TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    assert script.build_vocab(merges) == shipped


def test_every_shipped_file_is_small():
    sizes = {p.name: p.stat().st_size for p in ASSETS_DIR.rglob("*") if p.is_file()}
    assert max(sizes.values()) < 4 * 1024 * 1024, sizes


def test_tokenizer_cache_dir_is_used_when_it_holds_the_family_tokenizer(tmp_path):
    cached = load_tokenizer(v2=False)
    cached.model_max_length = 100  # a visible difference from the shipped one
    cached.save_pretrained(tmp_path / "openai_clip-vit-large-patch14")
    assert load_tokenizer(v2=False, tokenizer_cache_dir=tmp_path).model_max_length == 100
    assert load_tokenizer(v2=True, tokenizer_cache_dir=tmp_path).model_max_length == 77  # no SD2 folder: shipped
    cached.save_pretrained(tmp_path / "stabilityai_stable-diffusion-2")
    assert load_tokenizer(v2=True, tokenizer_cache_dir=tmp_path).model_max_length == 100
