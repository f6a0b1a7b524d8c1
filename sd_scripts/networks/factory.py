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
from sd_scripts.networks.base import Network, NetworkSpec
from sd_scripts.networks.kinds import KOHYA_DYLORA_MODULE, KOHYA_LORA_MODULE, LYCORIS_MODULE, MODULE_ALIASES
from sd_scripts.networks.kinds import network_type_of, parse_network_args
from sd_scripts.saving.lora_file import load_lora_file

DEFAULT_NETWORK_DIM = 4  # sd-scripts' --network_dim default
# Tensor names that only LyCORIS writes (LoHa, LoKr, IA3, DoRA, Tucker/CP, full and norm modules).
LYCORIS_ONLY_SUFFIXES = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
                         "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t1", "lokr_t2",
                         "on_input", "dora_scale", "lora_mid.weight", "diff", "diff_b", "w_norm", "b_norm")
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")


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


def create_network(spec: NetworkSpec, text_encoder: nn.Module, unet: nn.Module) -> Network:
    """A fresh network of `spec` on this text encoder and U-Net (not yet applied)."""
    return _network_class(spec.kind.module).from_spec(text_encoder, unet, spec)


def file_network_module(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """Which network module wrote a file: its `ss_network_module` if it says, else what its keys show.

    One sentence names what was found when the file is not a network this trainer can read.
    """
    declared = MODULE_ALIASES.get(metadata.get("ss_network_module", ""), metadata.get("ss_network_module", ""))
    if declared in (KOHYA_LORA_MODULE, KOHYA_DYLORA_MODULE, LYCORIS_MODULE) and _has_kohya_keys(state_dict):
        if declared == KOHYA_LORA_MODULE and any(_is_lycoris_key(key) for key in state_dict):
            return LYCORIS_MODULE
        return declared
    if any(_is_lycoris_key(key) for key in state_dict) and _has_kohya_keys(state_dict):
        return LYCORIS_MODULE
    if any(key.endswith(".lora_down.weight") for key in state_dict) and _has_kohya_keys(state_dict):
        return KOHYA_LORA_MODULE
    raise UserFacingError(f"This file is not a LoRA this trainer can continue: {_describe_keys(state_dict)}; "
                          "choose a LoRA or LyCORIS file made for Stable Diffusion 1.x/2.x.")


def network_from_file(
    weights: str | Path | Mapping[str, torch.Tensor],
    text_encoder: nn.Module,
    unet: nn.Module,
    *,
    multiplier: float = 1.0,
    metadata: Mapping[str, str] | None = None,
) -> Network:
    """A network shaped and filled as a saved file says (its own kind, ranks and alphas), not yet applied."""
    if isinstance(weights, Mapping):
        state_dict, metadata = dict(weights), dict(metadata or {})
    else:
        state_dict, metadata = load_lora_file(weights)
    module = file_network_module(state_dict, metadata)
    return _network_class(module).from_weights(text_encoder, unet, state_dict, multiplier=multiplier,
                                               metadata=metadata)


def _is_lycoris_key(key: str) -> bool:
    return key.split(".", 1)[-1] in LYCORIS_ONLY_SUFFIXES or key.endswith(".on_input")


def _has_kohya_keys(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith(KOHYA_PREFIXES) for key in state_dict)


def _describe_keys(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A few words on what a state dict holds, for the refusal sentence."""
    if not state_dict:
        return "it holds no tensors"
    keys = sorted(state_dict)
    if any(key.startswith("lycoris_") for key in keys):
        return "it has LyCORIS weights under the generic 'lycoris_' names, not the kohya 'lora_unet_' names"
    if any(".lora_A." in key or ".lora_B." in key for key in keys):
        return "it has diffusers/PEFT LoRA keys (lora_A/lora_B), not kohya ones"
    if any(key.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for key in keys):
        return "it is a full Stable Diffusion checkpoint, not a LoRA"
    if any(key.startswith("lora_") for key in keys):
        return f"its keys (such as {keys[0]}) use tensor names no known network writes"
    return f"its keys (such as {keys[0]}) are not LoRA keys"
