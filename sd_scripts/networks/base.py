"""The one small interface every trainable network has, so that training, the LoRA tools and each model family use
networks without knowing which algorithm they hold.

A network is a `torch.nn.Module` that sits on a frozen text encoder and U-Net:

* `from_spec(text_encoder, unet, spec)` builds a fresh one, `from_weights(text_encoder, unet, state_dict, ...)` one
  shaped and filled as a saved file says (`text_encoder`: one module, or a list of SDXL's two);
* `apply_to()` makes the base model compute with it, `restore()` makes the base model compute exactly what it did
  before, `merge_to(multiplier)` adds its weight differences into the base weights for good;
* `set_multiplier(m)` scales its effect (samples and tools);
* `prepare_optimizer_params(text_encoder_lr, unet_lr, default_lr)` gives the optimizer's parameter groups, each with
  its learning rate; a part whose rate is 0 is left out and frozen;
* `state_dict()` has exactly the keys of the file format (kohya / LyCORIS names), `load_weights(state_dict)` reads
  them back; a key of a module the network does not have is ignored, a shape that does not fit is refused;
* `text_encoder_loras` / `unet_loras` list the per-layer modules of each part;
* `.train()` while training and `.eval()` while sampling: DyLoRA's random rank and the dropouts act only in training;
* `trains_random_subsets` says whether a training step may leave some parameters without a gradient, chosen at random
  (DyLoRA's block of ranks, LyCORIS' module_dropout): several processes must then agree on which were trained;
* `weights_cast_once(dtype)` is a context for a step's forward and backward passes under autocast: the network casts
  its float32 weights to the half precision once for the step instead of once per layer where it can (our LoRA,
  LoCon and DyLoRA modules; LyCORIS' modules cast their own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol, Self

import torch
from torch import nn

from sd_scripts.networks.kinds import NetworkType

TextEncoders = nn.Module | Sequence[nn.Module]  # one text encoder, or SDXL's two in sd-scripts' order (te1, te2)


def as_update_input(x: torch.Tensor) -> torch.Tensor:
    """The original module's input as an update with float32 weights takes it: cast to float32, except under
    autocast, which casts input and weights to its half precision itself, so a round trip through float32 would only
    copy the activation twice (the result is the same to the bit)."""
    return x if torch.is_autocast_enabled(x.device.type) else x.to(torch.float32)


def register_alpha(module: nn.Module, alpha: float) -> None:
    """The module's `alpha` buffer (a key of the file) and its value as a Python number, `module.alpha_value`, for the
    forward pass: a scale computed from the buffer would be extra tensor operations per module and step (on a GPU,
    kernel launches). Loading a state dict into the module (a LoRA file, a saved state) refreshes the number."""
    module.register_buffer("alpha", torch.tensor(float(alpha), dtype=torch.float32))
    module.alpha_value = float(alpha)
    module.register_load_state_dict_post_hook(_refresh_alpha_value)


def _refresh_alpha_value(module: nn.Module, incompatible_keys: object) -> None:
    module.alpha_value = float(module.alpha)


@dataclass(frozen=True)
class NetworkSpec:
    """What to build: the type, its rank and alpha, the typed options of `kinds.parse_network_args`, which parts."""

    kind: NetworkType
    dim: int = 4
    alpha: float | None = 1.0
    options: Mapping[str, object] = field(default_factory=dict)
    train_unet: bool = True
    train_text_encoder: bool = True
    multiplier: float = 1.0


class Network(Protocol):
    """What the trainer and the tools may call on a network (see the module docstring)."""

    text_encoder_loras: list[nn.Module]
    unet_loras: list[nn.Module]
    trains_random_subsets: bool

    @classmethod
    def from_spec(cls, text_encoder: TextEncoders, unet: nn.Module, spec: NetworkSpec) -> Self: ...

    @classmethod
    def from_weights(
        cls, text_encoder: TextEncoders, unet: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
        multiplier: float = 1.0, metadata: Mapping[str, str] | None = None,
    ) -> Self: ...

    def apply_to(self) -> None: ...

    def restore(self) -> None: ...

    def merge_to(self, multiplier: float | None = None) -> None: ...

    def set_multiplier(self, multiplier: float) -> None: ...

    def prepare_optimizer_params(
        self, text_encoder_lr: float | None, unet_lr: float | None, default_lr: float
    ) -> list[dict]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None: ...

    def parameters(self): ...

    def to(self, *args, **kwargs) -> Self: ...

    def train(self, mode: bool = True) -> Self: ...

    def eval(self) -> Self: ...

    def weights_cast_once(self, dtype: torch.dtype | None) -> AbstractContextManager[None]: ...
