"""Building a network: from the trainer's settings, or from a saved file whose kind is read from its keys.

The trainer, the tools and the model families call only these functions and the interface of `base.Network`;
which module implements a type is decided here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sd_scripts.args import TrainArgs
from sd_scripts.errors import UserFacingError
from sd_scripts.networks.base import Network, NetworkSpec, TextEncoders
from sd_scripts.networks.file_kinds import file_network_module, require_file_fits_model
from sd_scripts.networks.kinds import KOHYA_DYLORA_MODULE, KOHYA_LORA_MODULE, LYCORIS_MODULE
from sd_scripts.networks.kinds import network_type_of, parse_network_args
from sd_scripts.networks.sgm_names import TEXT_ENCODER_PREFIX, UNET_PREFIX
from sd_scripts.saving.lora_file import load_lora_file

DEFAULT_NETWORK_DIM = 4  # sd-scripts' --network_dim default


def _network_class(module: str) -> type[Network]:
    """The class that implements sd-scripts' `network_module` (imported late: each pulls in torch and friends)."""
    if module == KOHYA_LORA_MODULE:
        from sd_scripts.networks.lora import LoRANetwork
        return LoRANetwork
    if module == KOHYA_DYLORA_MODULE:
        from sd_scripts.networks.dylora import DyLoRANetwork
        return DyLoRANetwork
    if module == LYCORIS_MODULE:
        from sd_scripts.networks.lycoris_network import LycorisNetwork
        return LycorisNetwork
    raise UserFacingError(f"The network module '{module}' is not one this trainer has; use networks.lora, "
                          "networks.dylora or lycoris.kohya.")


def spec_from_args(args: TrainArgs) -> NetworkSpec:
    """The network the trainer's settings ask for, every option checked against the type's table entry."""
    kind = network_type_of(args.network_module, args.network_args)
    return NetworkSpec(
        kind=kind,
        dim=args.network_dim or DEFAULT_NETWORK_DIM,
        alpha=args.network_alpha,
        options=parse_network_args(args.network_module, args.network_args),
        train_unet=not args.network_train_text_encoder_only,
        train_text_encoder=not args.network_train_unet_only,
    )


def create_network(spec: NetworkSpec, text_encoder: TextEncoders, unet: nn.Module) -> Network:
    """A fresh network of `spec` on this text encoder (or SDXL's list of two) and U-Net (not yet applied)."""
    return _network_class(spec.kind.module).from_spec(text_encoder, unet, spec)


def network_from_file(
    weights: str | Path | Mapping[str, torch.Tensor],
    text_encoder: TextEncoders,
    unet: nn.Module,
    *,
    multiplier: float = 1.0,
    metadata: Mapping[str, str] | None = None,
    block_lr_options: Mapping[str, object] | None = None,
    train_unet: bool = True,
    train_text_encoder: bool = True,
) -> Network:
    """A network shaped and filled as a saved file says (its own kind, ranks and alphas), not yet applied; a file
    made for the other family (SDXL, SD 1.x/2.x) than the U-Net's is refused in one sentence.

    `block_lr_options` (the typed options of the current settings) give a kohya LoRA read from a file the
    current run's per-block learning-rate weights, as sd-scripts does with dim_from_weights. Without
    `train_unet` / `train_text_encoder` the file's layers of that part are left out, so they are neither trained
    nor saved, as sd-scripts' `apply_to(text_encoder, unet, apply_text_encoder, apply_unet)` drops them.
    """
    from sd_scripts.networks.lora import is_sdxl_unet

    if isinstance(weights, Mapping):
        state_dict, metadata, name = dict(weights), dict(metadata or {}), "The network file"
    else:
        (state_dict, metadata), name = load_lora_file(weights), Path(weights).name
    module = file_network_module(state_dict, metadata)
    require_file_fits_model(name, state_dict, metadata, model_is_sdxl=is_sdxl_unet(unet))
    kept = _parts_of(state_dict, unet=train_unet, text_encoder=train_text_encoder)
    network = _network_class(module).from_weights(text_encoder, unet, kept, multiplier=multiplier, metadata=metadata)
    if block_lr_options and module == KOHYA_LORA_MODULE:
        network.set_block_lr_weights(block_lr_options)
    return network


def _parts_of(state_dict: dict[str, torch.Tensor], *, unet: bool, text_encoder: bool) -> dict[str, torch.Tensor]:
    """The file's tensors of the U-Net (`lora_unet_...`) and/or text encoder (`lora_te...`) layers."""
    if unet and text_encoder:
        return state_dict
    prefix, part = (UNET_PREFIX, "U-Net") if unet else (TEXT_ENCODER_PREFIX, "text encoder")
    kept = {key: tensor for key, tensor in state_dict.items() if key.startswith(prefix)}
    if not kept:
        raise UserFacingError(f"The LoRA file has no {part} layers, but only the {part} is to be trained; "
                              "train both parts or choose a LoRA that has that part.")
    return kept
