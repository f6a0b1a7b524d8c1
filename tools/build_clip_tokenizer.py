"""Rebuild the CLIP BPE tokenizer files shipped in sd_scripts/models/assets/clip_tokenizer/ (provenance script).

The source is OpenAI's `bpe_simple_vocab_16e6.txt.gz` (MIT), which the `open_clip_torch` wheel carries:

    pip download --no-deps -d /tmp/oc open_clip_torch
    python tools/build_clip_tokenizer.py /tmp/oc/open_clip_torch-*.whl

The vocabulary is laid out exactly as OpenAI's SimpleTokenizer lays it out, which is also the layout of the
`openai/clip-vit-large-patch14` and `stabilityai/stable-diffusion-2` tokenizers: the 256 byte characters, the same
256 with `</w>`, one token per merge for the first 48,894 merges, then `<|startoftext|>` and `<|endoftext|>`
(49,408 tokens; "a photo of a cat" -> 49406 320 1125 539 320 2368 49407).
"""

from __future__ import annotations

import argparse
import gzip
import json
import zipfile
from pathlib import Path

VOCAB_GZ_NAME = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # CLIP's vocabulary is 49,152 byte-level tokens before the two special ones
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "sd_scripts" / "models" / "assets" / "clip_tokenizer"


def byte_characters() -> list[str]:
    """The printable character GPT-2/CLIP byte-level BPE uses for each byte value 0..255, in vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    byte_values = list(printable)
    code_points = list(printable)
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            byte_values.append(byte)
            code_points.append(256 + shifted)
            shifted += 1
    return [chr(code_point) for code_point in code_points]


def read_merges(source: Path) -> list[str]:
    """The merge lines ("a b") from the gzip file, or from inside a wheel that contains it."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            member = next(name for name in wheel.namelist() if name.endswith(VOCAB_GZ_NAME))
            compressed = wheel.read(member)
    else:
        compressed = source.read_bytes()
    lines = gzip.decompress(compressed).decode("utf-8").split("\n")
    return lines[1 : NUM_MERGES + 1]  # the first line is a header


def build_vocab(merges: list[str]) -> dict[str, int]:
    characters = byte_characters()
    tokens = characters + [c + "</w>" for c in characters] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help=f"the open_clip_torch wheel or {VOCAB_GZ_NAME}")
    parser.add_argument("out_dir", type=Path, nargs="?", default=DEFAULT_OUT)
    options = parser.parse_args()

    merges = read_merges(options.source)
    vocab = build_vocab(merges)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    (options.out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (options.out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"{len(vocab)} tokens, {len(merges)} merges -> {options.out_dir}")


if __name__ == "__main__":
    main()
