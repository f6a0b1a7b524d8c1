"""Merge a LyCORIS file (LoCon, LoHa, LoKr, IA3; DoRA and Tucker layers too) or a LoRA into a checkpoint at a weight,
with the options of LyCORIS' own `tools/merge.py`: `base_model lycoris_model output_name --weight --dtype`.

The weight differences are lycoris-lora's own modules' (our network interface rebuilds them from the file with
lycoris-lora's classes and adds exactly what their forward adds; see networks/lycoris_network.py for why not
lycoris' `merge_to`), so this is `merge_lora.merge_into_checkpoint` with one file.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sd_scripts.tools.cli import run_cli, tqdm_progress
from sd_scripts.tools.merge_lora import PRECISIONS, merge_into_checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sd_scripts.tools.merge_lycoris",
        description="Merge a LyCORIS (or LoRA) file into an SD1/SD2/SDXL checkpoint (LyCORIS' tools/merge.py "
                    "options).")
    parser.add_argument("base_model", help="the SD1/SD2/SDXL checkpoint (.safetensors or .ckpt)")
    parser.add_argument("lycoris_model", help="the LoCon, LoHa, LoKr, IA3 or LoRA file")
    parser.add_argument("output_name", help="the new model, a .safetensors file")
    parser.add_argument("--is_v2", action="store_true", help="the model is SD2 (read from the file anyway)")
    parser.add_argument("--device", default="cpu", help="where the merge runs, e.g. cuda")
    parser.add_argument("--dtype", choices=tuple(PRECISIONS), default="float", help="precision of the saved model")
    parser.add_argument("--weight", type=float, default=1.0, help="how strongly the file is merged in")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, _run)


def _run(arguments: argparse.Namespace) -> None:
    path = merge_into_checkpoint(arguments.base_model, [arguments.lycoris_model], [arguments.weight],
                                 arguments.output_name, v2=arguments.is_v2 or None, save_precision=arguments.dtype,
                                 device=arguments.device, progress=tqdm_progress("merging"))
    print(f"Saved {path}")


if __name__ == "__main__":
    raise SystemExit(main())
