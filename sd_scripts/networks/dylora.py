"""kohya's DyLoRA (sd-scripts' `networks/dylora.py`): one training that serves every rank up to `dim` in steps of
`unit`, so a file can later be cut down to a smaller rank without retraining.

How sd-scripts trains it, and so how we do:

* Each layer's update is `dim / unit` blocks of rank `unit`: block i is rows i*unit .. (i+1)*unit of `lora_down`
  and the same columns of `lora_up`, each block its own pair of parameters.
* Every training forward draws one block at random (uniformly; sd-scripts draws a rank in 0..dim-1 and rounds it down
  to a multiple of unit, which is the same). That block gets the gradient; every other block, below and above it,
  is used detached. A block without a gradient keeps `grad` None, so the optimizer leaves it alone that step, its
  moments and weight decay included. The update is scaled by `alpha / dim * sqrt(dim / (b + unit))`, where b is the
  first rank of the drawn block. (The DyLoRA paper instead truncates the update at b + unit; sd-scripts does not.)
* In eval mode (sampling, tools) the whole rank is used with `alpha / dim`, exactly as a LoRA of rank `dim`.
* The draw uses torch's global generator: the trainer seeds it, saves and restores it with a resumable state, and
  gradient checkpointing replays it when it recomputes a forward, so the same block is drawn again.

The file is a plain kohya LoRA of rank `dim`: `lora_down.weight` is the A blocks stacked ([dim, in(, kh, kw)]),
`lora_up.weight` the B blocks side by side ([out, dim(, 1, 1)]), with `alpha` and the kohya names, so every LoRA
reader loads it. Its first r rows and columns (r a multiple of unit) are a LoRA of rank r, which is what
sd-scripts' `extract_lora_from_dylora.py` cuts out (keeping alpha).

Targets, names, hooks, merging and the optimizer groups are our kohya LoRA's (`LoRANetwork`); with `conv_dim` the
U-Net's 3x3 convolutions are trained too, at rank `dim` (sd-scripts requires conv_dim == dim). Unlike sd-scripts,
which applies network_alpha to them whatever conv_alpha says, `conv_alpha` is used when given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from functools import partial

import torch
from torch import nn
from torch.nn import functional

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.base import NetworkSpec, TextEncoders, as_update_input, register_alpha
from sd_scripts.networks.lora import LoRANetwork, file_module_ranks

DEFAULT_UNIT = 1  # sd-scripts' default, and what it uses for a file it re-creates from its weights
FILE_KEYS = ("lora_down.weight", "lora_up.weight", "alpha")


class DyLoRAModule(nn.Module):
    """The DyLoRA update of one Linear or Conv2d: `rank / unit` blocks, one of them trained per training forward.

    Parameters `lora_A_i` ([unit, in(, kh, kw)]) and `lora_B_i` ([out, unit(, 1, 1)]) hold block i; its state dict
    has the file's three keys instead. For a conv, the A blocks have the original kernel, stride and padding and
    the B blocks are 1x1, as in a kohya LoRA. The weights stay fp32; inputs are cast on the way in and out.
    """

    def __init__(
        self, lora_name: str, original: nn.Linear | nn.Conv2d, rank: int, alpha: float | None, *, unit: int
    ) -> None:
        super().__init__()
        self.lora_name = lora_name
        self.rank = rank
        self.unit = unit
        self.blocks = rank // unit
        self.multiplier = 1.0
        self.is_conv = isinstance(original, nn.Conv2d)
        if self.is_conv:
            self.stride, self.padding = original.stride, original.padding
            down_shape = (unit, original.in_channels, *original.kernel_size)
            up_shape = (original.out_channels, unit, 1, 1)
        else:
            down_shape, up_shape = (unit, original.in_features), (original.out_features, unit)
        for index in range(self.blocks):
            down = nn.Parameter(torch.empty(down_shape, dtype=torch.float32))
            nn.init.kaiming_uniform_(down, a=math.sqrt(5))  # the init of a LoRA's lora_down, block by block
            self.register_parameter(f"lora_A_{index}", down)
            self.register_parameter(f"lora_B_{index}", nn.Parameter(torch.zeros(up_shape, dtype=torch.float32)))
        if alpha is None or alpha == 0:
            alpha = rank
        register_alpha(self, alpha)
        self.cast_weights: tuple[torch.Tensor, ...] | None = None  # see weight_cast.cast_together

    @property
    def lora_A(self) -> list[nn.Parameter]:
        return [getattr(self, f"lora_A_{index}") for index in range(self.blocks)]

    @property
    def lora_B(self) -> list[nn.Parameter]:
        return [getattr(self, f"lora_B_{index}") for index in range(self.blocks)]

    def down_weight(self) -> torch.Tensor:
        """The file's `lora_down.weight`: the A blocks stacked."""
        return torch.cat(self.lora_A, dim=0)

    def up_weight(self) -> torch.Tensor:
        """The file's `lora_up.weight`: the B blocks side by side."""
        return torch.cat(self.lora_B, dim=1)

    def trained_weights(self) -> tuple[torch.Tensor, ...]:
        return (*self.lora_A, *self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The update for input `x`: in training one random block learns (see the module docstring), else all.
        Under autocast it uses the step's casts of the blocks when the network made them."""
        factor = self.multiplier / self.rank
        weights = self.trained_weights()
        if self.cast_weights is not None and torch.is_autocast_enabled(x.device.type):
            weights = self.cast_weights
        downs, ups = weights[: self.blocks], weights[self.blocks :]
        if self.training:
            trained = int(torch.randint(self.blocks, ()))
            down = torch.cat([block if index == trained else block.detach() for index, block in enumerate(downs)])
            up = torch.cat([block if index == trained else block.detach() for index, block in enumerate(ups)], dim=1)
            factor *= math.sqrt(self.rank / ((trained + 1) * self.unit))
        else:
            down, up = torch.cat(downs), torch.cat(ups, dim=1)
        scale = self.alpha_value * factor
        if self.is_conv:
            hidden = functional.conv2d(x, down, stride=self.stride, padding=self.padding)
            return functional.conv2d(hidden, up) * scale
        return functional.linear(functional.linear(x, down), up) * scale

    def add_to_output(
        self, original: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        """Forward hook on the original module: its output plus the update, in the output's dtype."""
        return output + self(as_update_input(inputs[0])).to(output.dtype)

    def delta_weight(self) -> torch.Tensor:
        """delta W of the whole rank in the original weight's shape (without the multiplier), for merging."""
        down = self.down_weight()
        update = self.up_weight().flatten(1) @ down.flatten(1)
        return update.reshape(update.shape[0], *down.shape[1:]) * (self.alpha / self.rank)

    # The state dict holds the file's keys, not the blocks: torch calls these two for this module's own entries.
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        for name, tensor in zip(FILE_KEYS, (self.down_weight(), self.up_weight(), self.alpha)):
            destination[prefix + name] = tensor if keep_vars else tensor.detach()

    def _load_from_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], prefix: str, local_metadata: dict, strict: bool,
        missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:
        blocks = {"lora_down.weight": (self.lora_A, 0), "lora_up.weight": (self.lora_B, 1)}
        for name in FILE_KEYS:
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            tensor = state_dict[key]
            with torch.no_grad():
                if name == "alpha":
                    self.alpha.copy_(tensor.reshape(()))
                    continue
                parts, dim = blocks[name]
                own_shape = torch.cat(parts, dim=dim).shape
                if tensor.shape != own_shape:
                    error_msgs.append(f"size mismatch for {key}: {tuple(tensor.shape)} in the file, "
                                      f"{tuple(own_shape)} here")
                    continue
                for part, piece in zip(parts, tensor.split(self.unit, dim=dim)):
                    part.copy_(piece)
        if strict:
            unexpected_keys.extend(key for key in state_dict
                                   if key.startswith(prefix) and key.removeprefix(prefix) not in FILE_KEYS)


class DyLoRANetwork(LoRANetwork):
    """kohya's DyLoRA on a text encoder and U-Net: our kohya LoRA network whose layers are `DyLoRAModule`s."""

    def __init__(
        self,
        text_encoder: TextEncoders,
        unet: nn.Module,
        *,
        multiplier: float = 1.0,
        dim: int = 4,
        alpha: float | None = 1.0,
        unit: int = DEFAULT_UNIT,
        conv_dim: int | None = None,
        conv_alpha: float | None = None,
        train_unet: bool = True,
        train_text_encoder: bool = True,
        module_ranks: Mapping[str, tuple[int, float | None]] | None = None,
    ) -> None:
        if module_ranks is None:
            if dim % unit:
                raise UserFacingError(f"DyLoRA trains ranks in steps of unit={unit}, but network_dim is {dim}; "
                                      f"choose a network_dim divisible by {unit}.")
            if conv_dim is not None and conv_dim != dim:
                raise UserFacingError(f"DyLoRA trains the 3x3 convolutions at the network dim, but conv_dim is "
                                      f"{conv_dim} and network_dim {dim}; set conv_dim={dim} or leave it out.")
        super().__init__(
            text_encoder,
            unet,
            multiplier=multiplier,
            dim=dim,
            alpha=alpha,
            conv_dim=conv_dim,
            conv_alpha=alpha if conv_alpha is None else conv_alpha,
            train_unet=train_unet,
            train_text_encoder=train_text_encoder,
            module_ranks=module_ranks,
            make_module=partial(DyLoRAModule, unit=unit),
        )
        self.unit = unit
        self.trains_random_subsets = True  # one random block of ranks a step

    @classmethod
    def from_spec(cls, text_encoder: TextEncoders, unet: nn.Module, spec: NetworkSpec) -> DyLoRANetwork:
        """A fresh DyLoRA as `spec` asks (its options: unit, conv_dim, conv_alpha)."""
        return cls(
            text_encoder,
            unet,
            multiplier=spec.multiplier,
            dim=spec.dim,
            alpha=spec.alpha,
            unit=spec.options.get("unit", DEFAULT_UNIT),
            conv_dim=spec.options.get("conv_dim"),
            conv_alpha=spec.options.get("conv_alpha"),
            train_unet=spec.train_unet,
            train_text_encoder=spec.train_text_encoder,
        )

    @classmethod
    def from_weights(
        cls,
        text_encoder: TextEncoders,
        unet: nn.Module,
        state_dict: Mapping[str, torch.Tensor],
        *,
        multiplier: float = 1.0,
        metadata: Mapping[str, str] | None = None,
    ) -> DyLoRANetwork:
        """A DyLoRA shaped as a file says (each layer's own rank and alpha), its weights loaded.

        The unit is the one the file was trained with (its `ss_network_args`) when that divides every layer's rank,
        else 1 as in sd-scripts, which always re-creates a file's network with unit 1.
        """
        ranks = file_module_ranks(state_dict)
        unit = file_unit(metadata or {}, (rank for rank, _ in ranks.values()))
        network = cls(text_encoder, unet, multiplier=multiplier, unit=unit, module_ranks=ranks)
        network.load_weights(state_dict)
        return network


def file_unit(metadata: Mapping[str, str], ranks: Iterable[int]) -> int:
    """The `unit` in a file's `ss_network_args` (JSON, {"unit": "4"}) if it divides every rank, else 1."""
    try:
        unit = int(json.loads(metadata.get("ss_network_args", "{}")).get("unit", DEFAULT_UNIT))
    except (ValueError, TypeError, AttributeError):
        return DEFAULT_UNIT
    return unit if unit >= 1 and all(rank % unit == 0 for rank in ranks) else DEFAULT_UNIT
