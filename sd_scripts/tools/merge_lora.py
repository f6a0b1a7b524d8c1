"""Merge LoRAs: several into one (exactly, by SVD of the summed weight differences, or losslessly by concatenation),
or any number into a base checkpoint. sd-scripts' `networks/merge_lora.py` and `svd_merge_lora.py` options.

* LoRA + LoRA (default): for each module, delta = sum_i ratio_i * (alpha_i/rank_i) * up_i @ down_i (LoRAs of any
  ranks, conv layers included, a module missing from a LoRA counts as zero), then SVD to `--new_rank` (conv 3x3:
  `--new_conv_rank`), both factors clipped to the `--clamp_quantile` quantile as svd_merge_lora does (1 keeps them
  exact), alpha = rank. With enough rank the merge reproduces the sum.
* `--concat`: each module's factors stacked along the rank, up_i scaled by ratio_i * alpha_i/rank_i and alpha =
  total rank, so the result is the exact sum with no SVD (sd-scripts' concat keeps the first alpha and so changes the
  scale; this does not). `--shuffle` permutes the stacked ranks (same weights, different order).
* `--sd_model`: each LoRA (or LyCORIS file) is added into the model's weights as W += ratio * delta through the
  network interface's `merge_to`, and the model is saved as an SD single-file `.safetensors` (SDXL: the SGM layout).

SDXL LoRAs (SGM names, te1/te2) merge as SD ones do; LoRAs of different families (SDXL and SD 1.x/2.x, SD1 and SD2)
are refused, and so is a file of another family than the checkpoint, before the checkpoint loads.

Files are read one module at a time (memory-mapped); the base model is loaded whole, as sd-scripts does.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import torch

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.file_kinds import file_is_sdxl, require_file_fits_model
from sd_scripts.saving.lora_file import save_lora
from sd_scripts.tools.cli import Progress, no_progress, run_cli, tqdm_progress
from sd_scripts.tools.lora_files import LoraReader, module_names_in_file, new_output, require_network_file
from sd_scripts.tools.low_rank import factorize, lora_delta

DEFAULT_CLAMP_QUANTILE = 0.99  # svd_merge_lora.py's CLAMP_QUANTILE
PRECISIONS = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def merge_loras(
    models: Sequence[str | Path],
    ratios: Sequence[float],
    save_to: str | Path,
    *,
    new_rank: int = 4,
    new_conv_rank: int | None = None,
    clamp_quantile: float | None = DEFAULT_CLAMP_QUANTILE,
    save_precision: str | None = None,
    device: str = "cpu",
    progress: Progress = no_progress,
) -> Path:
    """Sum the LoRAs' weight differences at `ratios` and write the rank-`new_rank` SVD of each module."""

    def combine(parts: list, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, float]:
        delta = sum(ratio * module.scale * lora_delta(module.down, module.up) for module, ratio in parts)
        is_conv = len(shape) == 4 and shape[2:] != (1, 1)
        rank = (new_conv_rank or new_rank) if is_conv else new_rank
        factors = factorize(delta.to(device), rank, weight_shape=shape, alpha=min(rank, *delta.shape),
                            clamp_quantile=clamp_quantile)
        return factors.down, factors.up, factors.alpha

    return _merge_by_module(models, ratios, save_to, combine, lambda tensors: (new_rank, new_conv_rank), "SVD",
                            save_precision, progress)


def concat_loras(
    models: Sequence[str | Path],
    ratios: Sequence[float],
    save_to: str | Path,
    *,
    shuffle: bool = False,
    save_precision: str | None = None,
    progress: Progress = no_progress,
) -> Path:
    """Stack the LoRAs' factors along the rank: the exact sum of ratio_i * delta_i, rank = the sum of the ranks."""

    def combine(parts: list, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, float]:
        down = torch.cat([module.down for module, _ in parts], dim=0)
        up = torch.cat([module.up * (ratio * module.scale) for module, ratio in parts], dim=1)
        if shuffle:
            order = torch.randperm(down.shape[0])
            down, up = down[order], up[:, order]
        return down, up, float(down.shape[0])

    def dims(tensors: dict[str, torch.Tensor]) -> tuple[int | None, None]:
        ranks = {tensor.shape[0] for key, tensor in tensors.items() if key.endswith(".lora_down.weight")}
        return (ranks.pop() if len(ranks) == 1 else None), None

    return _merge_by_module(models, ratios, save_to, combine, dims, "concatenation", save_precision, progress)


def _merge_by_module(
    models: Sequence[str | Path],
    ratios: Sequence[float],
    save_to: str | Path,
    combine: Callable[[list, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor, float]],
    dims: Callable[[dict[str, torch.Tensor]], tuple[int | None, int | None]],
    method: str,
    save_precision: str | None,
    progress: Progress,
) -> Path:
    """Read the LoRAs one module at a time, `combine` each module's (LoRA module, ratio) parts into new factors
    (down, up, alpha), and write the result with the merge's metadata (`dims`: the file's rank and conv rank)."""
    save_to = new_output(save_to)
    _check_ratios(models, ratios)
    tensors: dict[str, torch.Tensor] = {}
    with ExitStack() as stack:
        readers = [stack.enter_context(LoraReader(model, what="the merger")) for model in models]
        if len({file_is_sdxl(reader.keys, reader.metadata) for reader in readers}) > 1:
            raise UserFacingError("The LoRAs were made for different model families (SDXL and SD 1.x/2.x); merge "
                                  "only LoRAs of one family.")
        names = _module_union(readers)
        for index, name in enumerate(names):
            parts = [(reader.module(name), ratio) for reader, ratio in zip(readers, ratios) if reader.has(name)]
            shape = _same_shape(name, [module for module, _ in parts], models)
            tensors.update(_module_tensors(name, *combine(parts, shape)))
            progress(index + 1, len(names), name)
        rank, conv_rank = dims(tensors)
        metadata = _merged_metadata(readers, models, ratios, tensors, rank, conv_rank, method)
    save_lora(tensors, save_to, save_precision=save_precision or "float", metadata=metadata)
    return save_to


def merge_into_checkpoint(
    sd_model: str | Path,
    models: Sequence[str | Path],
    ratios: Sequence[float],
    save_to: str | Path,
    *,
    v2: bool | None = None,
    precision: str = "float",
    save_precision: str | None = None,
    device: str = "cpu",
    progress: Progress = no_progress,
) -> Path:
    """Add each LoRA or LyCORIS file at its ratio into the base model and save it as an SD `.safetensors` file.

    Every file is checked before the model loads (kind, family); each must fit the model's layers.
    """
    from sd_scripts.models import load_base_model, save_ldm_checkpoint
    from sd_scripts.models.checkpoint_header import read_model_family
    from sd_scripts.networks.factory import network_from_file

    save_to = new_output(save_to)
    _check_ratios(models, ratios)
    checked = [require_network_file(model) for model in models]
    family = read_model_family(sd_model)  # from the header: a file of the other family is refused before loading
    if family.version is not None:
        for path, (keys, metadata) in zip(models, checked):
            require_file_fits_model(Path(path).name, keys, metadata, model_is_sdxl=family.is_sdxl)
    steps = len(models) + 2
    model = load_base_model(sd_model, v2=v2)
    progress(1, steps, Path(sd_model).name)
    for path, (keys, metadata) in zip(models, checked):
        require_file_fits_model(Path(path).name, keys, metadata, model_is_sdxl=model.is_sdxl)  # a .ckpt's, known now
        if not model.is_sdxl:
            _require_same_family(Path(path), metadata, model.v2)
    _cast((model.unet, *model.text_encoders), device, PRECISIONS[precision])
    for index, (path, ratio) in enumerate(zip(models, ratios)):
        network = network_from_file(path, model.text_encoders, model.unet, multiplier=ratio)
        _require_all_modules_used(Path(path), network)
        network.to(device)
        network.merge_to(ratio)
        progress(index + 2, steps, Path(path).name)
    _cast((model.unet, *model.text_encoders, model.vae), "cpu", PRECISIONS[save_precision or precision])
    save_ldm_checkpoint(model, save_to)
    progress(steps, steps, save_to.name)
    return save_to


def _cast(parts: Sequence[torch.nn.Module], device: str, dtype: torch.dtype) -> None:
    """Move the model's parts, casting only when the dtype changes (diffusers warns at every cast)."""
    for part in parts:
        part.to(device)
        if next(part.parameters()).dtype != dtype:
            part.to(dtype)


def _check_ratios(models: Sequence[str | Path], ratios: Sequence[float]) -> None:
    if not models:
        raise UserFacingError("No LoRA was given; add at least one with --models.")
    if len(models) != len(ratios):
        raise UserFacingError(f"{len(models)} LoRAs but {len(ratios)} ratios were given; give one ratio per LoRA.")


def _module_union(readers: Sequence[LoraReader]) -> list[str]:
    names: dict[str, None] = {}
    for reader in readers:
        names.update(dict.fromkeys(reader.names))
    return list(names)


def _same_shape(name: str, modules: list, models: Sequence[str | Path]) -> torch.Size:
    shapes = {torch.Size((module.up.shape[0], *module.down.shape[1:])) for module in modules}
    if len(shapes) > 1:
        raise UserFacingError(f"The LoRAs disagree on the shape of {name}: they were made for different base models "
                              "(e.g. SD1 and SD2); merge only LoRAs of one model family.")
    return shapes.pop()


def _module_tensors(name: str, down: torch.Tensor, up: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    return {f"{name}.lora_down.weight": down.contiguous(), f"{name}.lora_up.weight": up.contiguous(),
            f"{name}.alpha": torch.tensor(float(alpha))}


def _merged_metadata(readers: Sequence[LoraReader], models: Sequence[str | Path], ratios: Sequence[float],
                     tensors: dict[str, torch.Tensor], dim: int | None, conv_dim: int | None, how: str) \
        -> dict[str, str]:
    """sd-scripts' minimum network metadata, the family taken from the first LoRA that states it."""
    stated = [reader.metadata for reader in readers]
    versions = {meta["ss_base_model_version"] for meta in stated if meta.get("ss_base_model_version")}
    if len({version.startswith("sd_v2") for version in versions}) > 1:
        raise UserFacingError(f"The LoRAs were made for different model families ({', '.join(sorted(versions))}); "
                              "merge only LoRAs of one family.")
    has_conv = any(tensor.ndim == 4 and tensor.shape[2:] != (1, 1) for tensor in tensors.values())
    network_args = {"conv_dim": str(conv_dim or dim), "conv_alpha": str(conv_dim or dim)} if has_conv and dim else {}
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(dim) if dim else "Dynamic",
        "ss_network_alpha": str(float(dim)) if dim else "Dynamic",
        "ss_network_args": json.dumps(network_args),
        "ss_training_comment": f"{how} merge of " + ", ".join(f"{Path(model).name} x {ratio:g}"
                                                               for model, ratio in zip(models, ratios)),
    }
    for key in ("ss_v2", "ss_base_model_version"):
        value = next((meta[key] for meta in stated if meta.get(key)), None)
        if value is not None:
            metadata[key] = value
    return metadata


def _require_same_family(path: Path, metadata: dict[str, str], model_is_v2: bool) -> None:
    version = metadata.get("ss_base_model_version") or (
        "sd_v2" if metadata.get("ss_v2") == "True" else "sd_v1" if metadata.get("ss_v2") == "False" else "")
    if version and version.startswith("sd_v2") != model_is_v2:
        lora_family, model_family = ("SD2", "SD1") if version.startswith("sd_v2") else ("SD1", "SD2")
        raise UserFacingError(f"{path.name} was made for {lora_family} models but this model is {model_family}; "
                              f"choose an {lora_family} model or a LoRA made for {model_family}.")


def _require_all_modules_used(path: Path, network: object) -> None:
    """A file whose modules match no layer of the model (another tool's names, another family) is refused."""
    wanted = module_names_in_file(path)
    found = {lora.lora_name for lora in network.text_encoder_loras + network.unet_loras}
    unknown = sorted(wanted - found)
    if unknown:
        raise UserFacingError(f"{len(unknown)} of the {len(wanted)} layers of {path.name} (such as {unknown[0]}) "
                              "match no layer of this model: it was made for another model or by a tool with other "
                              "layer names; choose a LoRA made for this model family.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sd_scripts.tools.merge_lora",
        description="Merge LoRAs into one (SVD or --concat), or into a model with --sd_model "
                    "(sd-scripts' merge_lora.py / svd_merge_lora.py options).")
    parser.add_argument("--sd_model", default=None, help="an SD1/SD2/SDXL checkpoint to merge the LoRAs into; "
                                                         "without it the LoRAs are merged into one LoRA")
    parser.add_argument("--v2", action="store_true", help="the model is SD2 (read from the file anyway)")
    parser.add_argument("--save_to", required=True, help="the new .safetensors file")
    parser.add_argument("--models", nargs="+", required=True, help="the LoRA (or, with --sd_model, LyCORIS) files")
    parser.add_argument("--ratios", nargs="+", type=float, required=True, help="one ratio per file")
    parser.add_argument("--new_rank", type=int, default=4, help="rank of the merged LoRA (SVD merge)")
    parser.add_argument("--new_conv_rank", type=int, default=None, help="rank of its conv 3x3 layers (default: "
                                                                        "--new_rank)")
    parser.add_argument("--clamp_quantile", type=float, default=DEFAULT_CLAMP_QUANTILE,
                        help="clip the merged factors to this quantile, as svd_merge_lora.py; 1 keeps them exact")
    parser.add_argument("--concat", action="store_true", help="stack the LoRAs instead (exact; rank = the sum)")
    parser.add_argument("--shuffle", action="store_true", help="with --concat: shuffle the order of the ranks")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="float", help="precision of the merge")
    parser.add_argument("--save_precision", choices=tuple(PRECISIONS), default=None,
                        help="precision of the saved file (default: --precision)")
    parser.add_argument("--device", default="cpu", help="where the maths runs, e.g. cuda")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, _run)


def _run(arguments: argparse.Namespace) -> None:
    progress = tqdm_progress("merging")
    common = {"save_precision": arguments.save_precision, "progress": progress}
    if arguments.sd_model:
        path = merge_into_checkpoint(arguments.sd_model, arguments.models, arguments.ratios, arguments.save_to,
                                     v2=arguments.v2 or None, precision=arguments.precision,
                                     device=arguments.device, **common)
    elif arguments.concat:
        path = concat_loras(arguments.models, arguments.ratios, arguments.save_to, shuffle=arguments.shuffle, **common)
    else:
        path = merge_loras(arguments.models, arguments.ratios, arguments.save_to, new_rank=arguments.new_rank,
                           new_conv_rank=arguments.new_conv_rank, clamp_quantile=arguments.clamp_quantile,
                           device=arguments.device, **common)
    print(f"Saved {path}")


if __name__ == "__main__":
    raise SystemExit(main())
