"""The CLIP tokenizer of a family, from `--tokenizer_cache_dir` when it holds one, else from the shipped files.

As in sd-scripts, the tokenizer never comes from the checkpoint: SD1 uses `openai/clip-vit-large-patch14`'s, SD2
`stabilityai/stable-diffusion-2`'s (same BPE, pad "!"). sd-scripts keeps them in
`<tokenizer_cache_dir>/openai_clip-vit-large-patch14` and `<tokenizer_cache_dir>/stabilityai_stable-diffusion-2`;
a folder there is used as it is. Nothing is downloaded and nothing is written to the cache folder.

`clean_caption` is the text clean-up of the tokenizer sd-scripts runs (transformers 4's Python CLIPTokenizer with
ftfy installed): transformers 5's CLIPTokenizer only NFC-normalizes, collapses whitespace and lower-cases, so without
it curly apostrophes, full-width characters and HTML entities would become other token ids than in sd-scripts.
"""

from __future__ import annotations

import re
from pathlib import Path

import ftfy
from transformers import CLIPTokenizer

from sd_scripts.models.shipped_assets import CLIP_TOKENIZER_DIR, tokenizer_settings

SD1_TOKENIZER_ID = "openai/clip-vit-large-patch14"
SD2_TOKENIZER_ID = "stabilityai/stable-diffusion-2"
SDXL_TOKENIZER_2_ID = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"


def load_tokenizer(v2: bool, tokenizer_cache_dir: str | Path | None = None, hub_id: str | None = None) -> CLIPTokenizer:
    """SD1's tokenizer, or with `v2` one that pads with "!" (SD2's, and SDXL's second under its own `hub_id`)."""
    if tokenizer_cache_dir:
        hub_id = hub_id or (SD2_TOKENIZER_ID if v2 else SD1_TOKENIZER_ID)
        cached = Path(tokenizer_cache_dir) / hub_id.replace("/", "_")
        if cached.is_dir():
            tokenizer = CLIPTokenizer.from_pretrained(str(cached), local_files_only=True)
            if hub_id == SDXL_TOKENIZER_2_ID:  # sd-scripts sets OpenCLIP's padding, "!", on bigG's hub tokenizer
                tokenizer.pad_token = "!"
            return tokenizer
    return CLIPTokenizer(
        vocab=str(CLIP_TOKENIZER_DIR / "vocab.json"),
        merges=str(CLIP_TOKENIZER_DIR / "merges.txt"),
        **tokenizer_settings(v2),
    )


def load_sdxl_tokenizers(tokenizer_cache_dir: str | Path | None = None) -> tuple[CLIPTokenizer, CLIPTokenizer]:
    """SDXL's two tokenizers, as sd-scripts' sdxl_train_util loads them: CLIP-L's, and bigG's padding with "!"."""
    return load_tokenizer(False, tokenizer_cache_dir), load_tokenizer(True, tokenizer_cache_dir, SDXL_TOKENIZER_2_ID)


def clean_caption(text: str) -> str:
    """`whitespace_clean(ftfy.fix_text(text)).lower()`, as transformers 4's CLIPTokenizer._tokenize does when ftfy is
    installed (sd-scripts pins ftfy): mojibake, curly quotes, full-width forms, ligatures and HTML entities fixed,
    runs of whitespace made one space, ends stripped."""
    return re.sub(r"\s+", " ", ftfy.fix_text(text)).strip().lower()
