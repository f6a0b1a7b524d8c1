"""Extract a LoRA or LoCon from a fine-tuned checkpoint and its base: sd-scripts' `extract_lora_from_models.py`
options, and LyCORIS' rank modes.

For every layer a kohya LoRA trains (plus the conv 3x3 layers of a LoCon when `--conv_dim` is given):
delta = W_tuned - W_org in float32, SVD, keep the rank the mode gives, up = U S and down = Vh, both clipped to
+-the `--clamp_quantile` quantile of their values (sd-scripts; 1 keeps them exact), alpha = rank (scale 1). The text
encoder is left out when no weight of it moved by more than `--min_diff` (sd-scripts' rule for an unchanged encoder).

Modes (LyCORIS' `extract_locon.py`, low_rank.py): `fixed` (the rank is `--dim` / `--conv_dim`, capped by the layer's
sides), `threshold`, `ratio`, `quantile` (the rank follows the singular values; `--dim`/`--conv_dim` are then the
thresholds). The output is always a kohya LoRA/LoCon file (LyCORIS' full-matrix and Tucker variants are not made).

SDXL models give an SDXL LoRA with sd-scripts' names (SGM U-Net names, `lora_te1_`/`lora_te2_`); the two models
must be of one family, which is read from the files' headers before either loads.

Several extractions from one pair of models (the original popups' text file: `<linear> <conv>` per line, or one
value for a LoRA without conv layers) load the models and decompose each layer once.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sd_scripts.errors import UserFacingError
from sd_scripts.saving.lora_file import save_lora
from sd_scripts.tools.cli import Progress, no_progress, run_cli, tqdm_progress
from sd_scripts.tools.lora_files import new_output
from sd_scripts.tools.low_rank import EXTRACT_MODES, extract_rank, factorize, svd

DEFAULT_MIN_DIFF = 0.01  # sd-scripts' --min_diff
DEFAULT_CLAMP_QUANTILE = 0.99  # sd-scripts' --clamp_quantile


@dataclass(frozen=True)
class ExtractTarget:
    """One extraction: `linear` and `conv` are ranks (mode fixed) or the mode's thresholds; conv None: a plain LoRA."""

    linear: float
    conv: float | None = None
    mode: str = "fixed"

    def __post_init__(self) -> None:
        if self.mode not in EXTRACT_MODES:
            raise UserFacingError(f"'{self.mode}' is not an extraction mode; choose one of {', '.join(EXTRACT_MODES)}.")
        if self.linear <= 0 or (self.conv is not None and self.conv <= 0):
            raise UserFacingError("The dims (or thresholds) of an extraction must be above 0; correct them.")

    def name_suffix(self) -> str:
        values = [f"{self.linear:g}"] + ([f"{self.conv:g}"] if self.conv is not None else [])
        return "-".join([self.mode, *values])


@torch.no_grad()
def extract_loras(
    model_org: str | Path,
    model_tuned: str | Path,
    jobs: Sequence[tuple[str | Path, ExtractTarget]],
    *,
    v2: bool | None = None,
    clamp_quantile: float | None = DEFAULT_CLAMP_QUANTILE,
    min_diff: float = DEFAULT_MIN_DIFF,
    save_precision: str | None = None,
    device: str = "cpu",
    progress: Progress = no_progress,
) -> list[Path]:
    """Write one LoRA per (path, target) of `jobs`, from the weight differences of the two models."""
    from sd_scripts.models import load_base_model
    from sd_scripts.networks.lora import LoRANetwork

    from sd_scripts.models.checkpoint_header import read_model_family

    outputs = [new_output(path) for path, _ in jobs]
    if len(set(outputs)) != len(outputs):
        raise UserFacingError("Two extractions would write the same file; give each its own name.")
    with_conv = any(target.conv is not None for _, target in jobs)
    _require_one_family(*(read_model_family(path).version for path in (model_org, model_tuned)))
    org = load_base_model(model_org, v2=v2)
    tuned = load_base_model(model_tuned, v2=v2)
    _require_one_family(org.version, tuned.version)  # a .ckpt's family is known once it has loaded
    layers = {}
    for name, model in (("org", org), ("tuned", tuned)):
        network = LoRANetwork(model.text_encoders, model.unet, dim=1, conv_dim=1 if with_conv else None)
        layers[name] = network.targets
    names = list(layers["org"])
    if set(names) != set(layers["tuned"]):
        raise UserFacingError("The two models have different layers; choose the tuned model's own base model.")
    text_encoder_changed = any(
        float((layers["tuned"][name].weight.float() - layers["org"][name].weight.float()).abs().max()) > min_diff
        for name in names if name.startswith("lora_te"))
    if not text_encoder_changed:
        names = [name for name in names if not name.startswith("lora_te")]
    results: list[dict[str, torch.Tensor]] = [{} for _ in jobs]
    for index, name in enumerate(names):
        weight = layers["org"][name].weight
        is_conv3x3 = weight.ndim == 4 and weight.shape[2:] != (1, 1)
        delta = (layers["tuned"][name].weight.float() - weight.float()).flatten(1)
        decomposition = svd(delta, device)
        for result, (_, target) in zip(results, jobs):
            param = target.conv if is_conv3x3 else target.linear
            if param is None:
                continue
            rank = extract_rank(decomposition[1], target.mode, param, *delta.shape)
            factors = factorize(delta, rank, weight_shape=weight.shape, alpha=rank, decomposition=decomposition,
                                clamp_quantile=clamp_quantile)
            result[f"{name}.lora_down.weight"] = factors.down
            result[f"{name}.lora_up.weight"] = factors.up
            result[f"{name}.alpha"] = torch.tensor(float(factors.alpha))
        progress(index + 1, len(names), name)
    for path, result, (_, target) in zip(outputs, results, jobs):
        save_lora(result, path, save_precision=save_precision or "float",
                  metadata=_extracted_metadata(target, org.version, text_encoder_changed))
    return outputs


def _require_one_family(org: str | None, tuned: str | None) -> None:
    """Refuse models of two families (SD1, SD2, SDXL; an SD2 and its v-prediction variant are one family)."""
    from sd_scripts.models.checkpoint_header import FAMILY_NAMES

    if org is None or tuned is None or FAMILY_NAMES[org] == FAMILY_NAMES[tuned]:
        return
    raise UserFacingError(f"The two models are of different families ({FAMILY_NAMES[org]} and {FAMILY_NAMES[tuned]}); "
                          "choose the tuned model's own base model.")


def read_targets_file(path: str | Path, *, mode: str) -> list[ExtractTarget]:
    """The original popups' text file: `<linear> <conv>` per line, or `<linear>` alone for a LoRA without convs."""
    targets = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        try:
            if len(words) <= 2:
                values = [int(word) if mode == "fixed" else float(word) for word in words]
                targets.append(ExtractTarget(values[0], values[1] if len(values) == 2 else None, mode))
                continue
        except ValueError:
            pass
        what = "whole numbers" if mode == "fixed" else "numbers"
        raise UserFacingError(f"Line {number} of {Path(path).name} ('{line.strip()}') is not one or two {what} "
                              "(<linear> <conv>); correct it.")
    if not targets:
        raise UserFacingError(f"{Path(path).name} lists no dims; write '<linear> <conv>' on each line.")
    return targets


def _extracted_metadata(target: ExtractTarget, version: str, with_text_encoder: bool) -> dict[str, str]:
    """The minimum network metadata sd-scripts' extraction writes."""
    fixed = target.mode == "fixed"
    dim = str(int(target.linear)) if fixed else "Dynamic"
    network_args = {}
    if target.conv is not None:
        conv = str(int(target.conv)) if fixed else "Dynamic"
        network_args = {"conv_dim": conv, "conv_alpha": conv}
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": dim,
        "ss_network_alpha": str(float(dim)) if fixed else "Dynamic",
        "ss_network_args": json.dumps(network_args),
        "ss_v2": str(version.startswith("sd_v2")),
        "ss_base_model_version": version,
        "ss_training_comment": f"extracted ({target.mode} {target.name_suffix().split('-', 1)[1]})"
                               + ("" if with_text_encoder else "; the text encoder did not change"),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sd_scripts.tools.extract_lora",
        description="Extract a LoRA/LoCon from the difference of two models (sd-scripts' "
                    "extract_lora_from_models.py options, LyCORIS' modes).")
    parser.add_argument("--model_org", required=True, help="the base model the tuned one was trained from")
    parser.add_argument("--model_tuned", required=True, help="the fine-tuned model")
    parser.add_argument("--save_to", required=True, help="the new .safetensors file (a folder with --targets_file)")
    parser.add_argument("--dim", type=float, default=4, help="rank of the linear layers (mode fixed), else the "
                                                             "mode's threshold")
    parser.add_argument("--conv_dim", type=float, default=None, help="the same for conv 3x3 layers: makes a LoCon")
    parser.add_argument("--mode", choices=EXTRACT_MODES, default="fixed", help="how ranks are chosen (LyCORIS)")
    parser.add_argument("--clamp_quantile", type=float, default=DEFAULT_CLAMP_QUANTILE,
                        help="clip the factors to this quantile; 1 keeps them exact")
    parser.add_argument("--min_diff", type=float, default=DEFAULT_MIN_DIFF,
                        help="the text encoder is left out when no weight changed by more than this")
    parser.add_argument("--v2", action="store_true", help="the models are SD2 (read from the files anyway; SDXL too)")
    parser.add_argument("--save_precision", choices=("float", "fp16", "bf16"), default=None,
                        help="precision of the saved file (default float)")
    parser.add_argument("--device", default="cpu", help="where the SVDs run, e.g. cuda")
    parser.add_argument("--targets_file", default=None,
                        help="several extractions: '<linear> <conv>' per line; outputs <name>-<mode>-<linear>-<conv>")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, _run)


def _run(arguments: argparse.Namespace) -> None:
    if arguments.targets_file:
        folder = Path(arguments.save_to)
        folder.mkdir(parents=True, exist_ok=True)
        name = Path(arguments.model_tuned).stem
        jobs = [(folder / f"{name}-{target.name_suffix()}.safetensors", target)
                for target in read_targets_file(arguments.targets_file, mode=arguments.mode)]
    else:
        jobs = [(arguments.save_to, ExtractTarget(arguments.dim, arguments.conv_dim, arguments.mode))]
    paths = extract_loras(arguments.model_org, arguments.model_tuned, jobs, v2=arguments.v2 or None,
                          clamp_quantile=arguments.clamp_quantile, min_diff=arguments.min_diff,
                          save_precision=arguments.save_precision, device=arguments.device,
                          progress=tqdm_progress("extracting"))
    for path in paths:
        print(f"Saved {path}")


if __name__ == "__main__":
    raise SystemExit(main())
