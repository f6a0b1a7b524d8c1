"""Resize a LoRA to a lower rank by SVD, as sd-scripts' `networks/resize_lora.py` does, with its options.

Per module: W = up @ down (float32; conv kernels flattened), SVD, keep the rank the method gives (low_rank.py), write
up = U S and down = Vh, and alpha = old_alpha / old_rank * new_rank so the effective scale alpha/rank is unchanged.
Conv 3x3 layers use `--new_conv_rank` (default: `--new_rank`). The metadata gets sd-scripts' updates
(`ss_network_dim`/`ss_network_alpha`, or `Dynamic`, and a note in front of `ss_training_comment`) and new hashes.

Beyond sd-scripts: several targets in one run (a list, or the original popups' text file: one rank per line, or
`<dynamic_param> <max_rank>` per line for a dynamic method), named `<name>-<method>-<value>.safetensors`, and a whole
folder of LoRAs at once. Conv 3x3 means kernel > 1x1 here (sd-scripts gives 1x1 convs the conv rank too; for SD1's
1x1 `proj_in/out` that differs only when the two ranks differ). The SVD is exact (sd-scripts approximates matrices
wider than 2048 with svd_lowrank). A fixed rank above a module's smaller side is capped there, and alpha follows the
rank actually kept.

`python -m sd_scripts.tools.resize_lora --model in.safetensors --save_to out.safetensors --new_rank 16`
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sd_scripts.errors import UserFacingError
from sd_scripts.untrusted import shown
from sd_scripts.saving.lora_file import save_lora
from sd_scripts.tools.cli import Progress, no_progress, run_cli, tqdm_progress
from sd_scripts.tools.lora_files import LoraReader, new_output
from sd_scripts.tools.low_rank import DYNAMIC_METHODS, dynamic_rank, factorize, lora_delta, svd

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


@dataclass(frozen=True)
class ResizeTarget:
    """One resize: the rank (the cap for a dynamic method), the conv 3x3 rank, and the dynamic method and param."""

    rank: int
    conv_rank: int | None = None
    method: str | None = None
    param: float | None = None

    def __post_init__(self) -> None:
        if self.rank < 1 or (self.conv_rank is not None and self.conv_rank < 1):
            raise UserFacingError(f"A new rank must be 1 or more, not {self.rank}; give a positive rank.")
        if self.method is not None and self.method not in DYNAMIC_METHODS:
            raise UserFacingError(f"'{self.method}' is not a dynamic method; choose one of "
                                  f"{', '.join(DYNAMIC_METHODS)}.")
        if self.method is not None and not self.param:
            raise UserFacingError(f"The dynamic method {self.method} needs a dynamic_param; give one "
                                  "(e.g. 0.9 for sv_fro).")

    def name_suffix(self) -> str:
        """`Fixed-<rank>` or `<method>-<param>-<max rank>`, the original popups' output names."""
        if self.method is None:
            conv = f"-conv{self.conv_rank}" if self.conv_rank not in (None, self.rank) else ""
            return f"Fixed-{self.rank}{conv}"
        return f"{self.method}-{self.param:g}-{self.rank}"


@dataclass(frozen=True)
class ModuleReport:
    name: str
    old_rank: int
    new_rank: int
    alpha: float
    sum_retained: float
    fro_retained: float
    max_ratio: float


@dataclass(frozen=True)
class ResizeResult:
    path: Path
    modules: list[ModuleReport]
    old_dim: int

    def report(self) -> str:
        """sd-scripts' --verbose lines: kept rank and retained shares per module, then the mean Frobenius share."""
        lines = [f"{shown(m.name):75} | sum(S) retained: {m.sum_retained:.1%}, fro retained: {m.fro_retained:.1%}, "
                 f"max(S) ratio: {m.max_ratio:0.1f}, dim: {m.new_rank}, alpha: {m.alpha:g}" for m in self.modules]
        shares = [m.fro_retained for m in self.modules]
        lines.append(f"Average Frobenius norm retention: {statistics.mean(shares):.2%} | "
                     f"std: {statistics.pstdev(shares):0.3f}")
        return "\n".join(lines)


def resize_lora(
    model: str | Path,
    save_to: str | Path,
    target: ResizeTarget,
    *,
    save_precision: str | None = None,
    device: str = "cpu",
    progress: Progress = no_progress,
) -> ResizeResult:
    """Write `model` resized to `target` as the new file `save_to` (float32 unless `save_precision`)."""
    save_to = new_output(save_to, LORA_SUFFIXES)
    tensors: dict[str, torch.Tensor] = {}
    reports: list[ModuleReport] = []
    with LoraReader(model, what="the resizer") as reader:
        for index, module in enumerate(reader.modules()):
            is_conv = module.down.ndim == 4 and module.down.shape[2:] != (1, 1)
            cap = (target.conv_rank or target.rank) if is_conv else target.rank
            delta = lora_delta(module.down, module.up)
            decomposition = svd(delta, device)
            rank = dynamic_rank(decomposition[1], target.method, target.param, cap)
            factors = factorize(delta, rank, weight_shape=_weight_shape(module.down, module.up),
                                alpha=module.scale * rank, decomposition=decomposition)
            tensors[f"{module.name}.lora_down.weight"] = factors.down
            tensors[f"{module.name}.lora_up.weight"] = factors.up
            tensors[f"{module.name}.alpha"] = torch.tensor(factors.alpha)
            reports.append(ModuleReport(module.name, module.rank, factors.rank, factors.alpha, factors.sum_retained,
                                        factors.fro_retained, factors.max_ratio))
            progress(index + 1, len(reader.names), module.name)
        metadata = _resized_metadata(reader.metadata, target, reports)
    save_lora(tensors, save_to, save_model_as="safetensors" if save_to.suffix == ".safetensors" else "ckpt",
              save_precision=save_precision or "float", metadata=metadata)
    return ResizeResult(save_to, reports, max(report.old_rank for report in reports))


def resize_many(
    models: Sequence[str | Path],
    output_folder: str | Path,
    targets: Sequence[ResizeTarget],
    *,
    name: str | None = None,
    save_precision: str | None = None,
    device: str = "cpu",
    progress: Progress = no_progress,
) -> list[ResizeResult]:
    """Every model at every target, as `<output_folder>/<name or model name>-<target suffix>.safetensors`.

    All output names are checked before the first file is written, so a clash stops the run at once.
    """
    folder = Path(output_folder)
    jobs = [(Path(model), target, folder / f"{name or Path(model).stem}-{target.name_suffix()}.safetensors")
            for model in models for target in targets]
    for _, _, path in jobs:
        new_output(path)
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for number, (model, target, path) in enumerate(jobs):
        results.append(resize_lora(model, path, target, save_precision=save_precision, device=device))
        progress(number + 1, len(jobs), path.name)
    return results


def read_targets_file(path: str | Path, *, method: str | None, conv_rank: int | None = None) -> list[ResizeTarget]:
    """The original popups' text file: one rank per line, or `<dynamic_param> <max_rank>` per line with a method."""
    targets = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        try:
            if method is None and len(words) == 1:
                targets.append(ResizeTarget(int(words[0]), conv_rank))
                continue
            if method is not None and len(words) == 2:
                targets.append(ResizeTarget(int(words[1]), conv_rank, method, float(words[0])))
                continue
        except ValueError:
            pass
        shape = "<dynamic_param> <max_rank>" if method else "one whole number (the rank)"
        raise UserFacingError(f"Line {number} of {Path(path).name} ('{line.strip()}') is not {shape}; correct it.")
    if not targets:
        raise UserFacingError(f"{Path(path).name} lists no ranks; write one target per line.")
    return targets


def lora_files_in(folder: str | Path) -> list[Path]:
    """The LoRA files directly inside `folder`, by name."""
    found = sorted(path for path in Path(folder).iterdir() if path.suffix.lower() in LORA_SUFFIXES and path.is_file())
    if not found:
        raise UserFacingError(f"{folder} holds no LoRA files (.safetensors, .ckpt, .pt); choose another folder.")
    return found


def _weight_shape(down: torch.Tensor, up: torch.Tensor) -> torch.Size:
    return torch.Size((up.shape[0], *down.shape[1:]))


def _resized_metadata(metadata: dict[str, str], target: ResizeTarget, reports: list[ModuleReport]) -> dict[str, str]:
    """sd-scripts' updates: dims and alphas (or Dynamic), the resize noted before the training comment."""
    updated = {key: value for key, value in metadata.items() if not key.startswith("sshs_")}
    comment = metadata.get("ss_training_comment", "")
    old_dim = max(report.old_rank for report in reports)
    if target.method is None:
        conv = "" if target.conv_rank in (None, target.rank) else f" (conv: {target.conv_rank})"
        updated["ss_training_comment"] = f"dimension is resized from {old_dim} to {target.rank}{conv}; {comment}"
        updated["ss_network_dim"] = str(target.rank)
        alphas = {report.alpha for report in reports if report.new_rank == target.rank}
        updated["ss_network_alpha"] = str(alphas.pop()) if len(alphas) == 1 else "Dynamic"
        if target.conv_rank is not None and "ss_network_args" in metadata:
            try:  # the file's own text: anything but a JSON object is left as it is
                network_args = json.loads(metadata["ss_network_args"] or "{}")
            except (json.JSONDecodeError, RecursionError):
                network_args = None
            if isinstance(network_args, dict) and "conv_dim" in network_args:
                network_args["conv_dim"] = str(target.conv_rank)
                updated["ss_network_args"] = json.dumps(network_args)
    else:
        updated["ss_training_comment"] = (f"Dynamic resize with {target.method}: {target.param} from {old_dim}; "
                                          f"{comment}")
        updated["ss_network_dim"] = "Dynamic"
        updated["ss_network_alpha"] = "Dynamic"
    return updated


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sd_scripts.tools.resize_lora",
        description="Resize a LoRA to a lower rank by SVD (sd-scripts' resize_lora.py options).")
    parser.add_argument("--model", required=True, help="the LoRA to resize (.safetensors, .ckpt, .pt), or a folder "
                                                       "of LoRAs (then --save_to is a folder)")
    parser.add_argument("--save_to", required=True,
                        help="the new file (.safetensors or .ckpt); a folder with --targets_file or a folder --model")
    parser.add_argument("--new_rank", type=int, default=4, help="the new rank; the maximum for a dynamic method")
    parser.add_argument("--new_conv_rank", type=int, default=None, help="the rank of conv 3x3 layers (default: "
                                                                        "--new_rank)")
    parser.add_argument("--dynamic_method", choices=DYNAMIC_METHODS, default=None,
                        help="choose each module's rank from its singular values")
    parser.add_argument("--dynamic_param", type=float, default=None,
                        help="the target of the dynamic method (sv_ratio: e.g. 10; sv_fro, sv_cumulative: e.g. 0.9)")
    parser.add_argument("--save_precision", choices=("float", "fp16", "bf16"), default=None,
                        help="precision of the saved file (default float)")
    parser.add_argument("--device", default="cpu", help="where the SVDs run, e.g. cuda")
    parser.add_argument("--verbose", action="store_true", help="print the kept rank and retained norm per module")
    parser.add_argument("--targets_file", default=None,
                        help="several resizes: a text file with one rank per line, or '<dynamic_param> <max_rank>' "
                             "per line with --dynamic_method; outputs are named <name>-<method>-<value>")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, _run)


def _run(arguments: argparse.Namespace) -> None:
    if arguments.targets_file:
        targets = read_targets_file(arguments.targets_file, method=arguments.dynamic_method,
                                    conv_rank=arguments.new_conv_rank)
    else:
        targets = [ResizeTarget(arguments.new_rank, arguments.new_conv_rank, arguments.dynamic_method,
                                arguments.dynamic_param)]
    model = Path(arguments.model)
    options = {"save_precision": arguments.save_precision, "device": arguments.device}
    if model.is_dir() or arguments.targets_file:
        models = lora_files_in(model) if model.is_dir() else [model]
        results = resize_many(models, arguments.save_to, targets, progress=tqdm_progress("resizing"), **options)
    else:
        results = [resize_lora(model, arguments.save_to, targets[0], progress=tqdm_progress("resizing"), **options)]
    for result in results:
        if arguments.verbose:
            print(result.report())
        print(f"Saved {result.path}")


if __name__ == "__main__":
    raise SystemExit(main())
