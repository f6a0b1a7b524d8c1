"""Our kohya-format LoRA / LoCon network for Stable Diffusion 1.x, 2.x and SDXL.

It behaves as sd-scripts' `networks/lora.py`, so the files it writes load in A1111, ComfyUI, Forge, diffusers and
sd-scripts itself:

* Targets are found by class name: inside every `Transformer2DModel` of the U-Net and every `CLIPAttention` /
  `CLIPSdpaAttention` / `CLIPMLP` of the text encoder, each `Linear` and 1x1 `Conv2d` gets a LoRA of rank `dim`.
  With `conv_dim`, the 3x3 convs of `ResnetBlock2D`, `Downsample2D` and `Upsample2D` get rank `conv_dim` too (their
  Linear `time_emb_proj` and 1x1 `conv_shortcut` get `dim`).
* Block-wise options (`blocks.py`): `block_dims`/`block_alphas` (and `conv_block_dims`/`conv_block_alphas`) give
  each of the U-Net's 25 blocks its own rank and alpha; `down_lr_weight`/`mid_lr_weight`/`up_lr_weight` give each
  block its own optimizer group at unet lr x weight, and a block of weight 0 gets no modules (no keys in the file).
* Key names are `lora_unet_<diffusers path>` and `lora_te_text_model_<path>` with every "." turned into "_".
  transformers 5 dropped the `text_model.` level of `CLIPTextModel`; it is put back so the names stay the ones every
  LoRA reader expects. SDXL (a U-Net with the "text_time" embedding, and a list of two text encoders) is named as
  sd-scripts names it: `lora_unet_<SGM path>` and `lora_te1_...` / `lora_te2_...` (see `sgm_names.py`). The same
  classes are targeted as for SD1/SD2, which are the ones sd-scripts' SGM U-Net has.
* `lora_down` is Kaiming-uniform (a=sqrt(5)), `lora_up` is zero, so applying a fresh network changes nothing.
  Output = original(x) + up(down(x)) * multiplier * alpha / rank.

The network never edits the base model's classes or module tree: `apply_to` adds a forward hook on each target
module and `restore` removes it, so the base model's own `state_dict` and module names are the same before, during
and after training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional
from torch.utils.hooks import RemovableHandle

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.base import NetworkSpec, TextEncoders, as_update_input, register_alpha
from sd_scripts.networks.blocks import BlockRanks, block_index, block_lr_weights, block_ranks
from sd_scripts.networks.sgm_names import UNET_PREFIX, is_sdxl_unet_config, sgm_module_path
from sd_scripts.networks.sgm_names import text_encoder_prefixes
from sd_scripts.networks.weight_cast import cast_together
from sd_scripts.saving.lora_file import load_lora_file
TEXT_ENCODER_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
UNET_TARGETS = ("Transformer2DModel",)
UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
DEFAULT_CONV_ALPHA = 1.0  # sd-scripts' default when conv_dim is given without conv_alpha


class LoRAModule(nn.Module):
    """The low-rank update of one Linear or Conv2d: delta W = up @ down * alpha / rank.

    For a conv, `lora_down` has the original kernel, stride and padding and `lora_up` is 1x1, as in sd-scripts.
    The weights stay in fp32 whatever the base model's dtype; inputs are cast on the way in (autocast casts them
    itself) and the update to the output's dtype on the way out.
    """

    def __init__(self, lora_name: str, original: nn.Linear | nn.Conv2d, rank: int, alpha: float | None) -> None:
        super().__init__()
        self.lora_name = lora_name
        self.rank = rank
        self.multiplier = 1.0
        if isinstance(original, nn.Conv2d):
            self.lora_down = nn.Conv2d(
                original.in_channels, rank, original.kernel_size, original.stride, original.padding,
                bias=False, dtype=torch.float32,
            )
            self.lora_up = nn.Conv2d(rank, original.out_channels, 1, 1, bias=False, dtype=torch.float32)
        else:
            self.lora_down = nn.Linear(original.in_features, rank, bias=False, dtype=torch.float32)
            self.lora_up = nn.Linear(rank, original.out_features, bias=False, dtype=torch.float32)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        if alpha is None or alpha == 0:
            alpha = rank
        register_alpha(self, alpha)
        self.cast_weights: tuple[torch.Tensor, torch.Tensor] | None = None  # see weight_cast.cast_together

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The LoRA's contribution to the original module's output for input `x`.

        The two layers' weights are applied with torch's functions rather than by calling the layers: a module call
        costs several times the operation itself at these sizes, and a step makes hundreds of them."""
        return self.low_rank(x) * self.scale()

    def trained_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_down.weight, self.lora_up.weight

    def low_rank(self, x: torch.Tensor) -> torch.Tensor:
        """up(down(x)), unscaled; under autocast with the step's casts of the weights when the network made them."""
        down = self.lora_down
        if self.cast_weights is not None and torch.is_autocast_enabled(x.device.type):
            down_weight, up_weight = self.cast_weights
        else:
            down_weight, up_weight = self.trained_weights()
        if isinstance(down, nn.Conv2d):
            return functional.conv2d(functional.conv2d(x, down_weight, None, down.stride, down.padding), up_weight)
        return functional.linear(functional.linear(x, down_weight), up_weight)

    def scale(self) -> float:
        return self.alpha_value / self.rank * self.multiplier

    def add_to_output(
        self, original: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        """Forward hook on the original module: its output plus the LoRA's, in the output's dtype; the scaling and
        the sum are one operation."""
        return torch.add(output, self.low_rank(as_update_input(inputs[0])).to(output.dtype), alpha=self.scale())

    def delta_weight(self) -> torch.Tensor:
        """delta W in the original weight's shape (without the multiplier), for merging into the base model."""
        up = self.lora_up.weight.flatten(1)
        down = self.lora_down.weight.flatten(1)
        out_shape = (self.lora_up.weight.shape[0], *self.lora_down.weight.shape[1:])
        return (up @ down).reshape(out_shape) * (self.alpha / self.rank)


def text_encoder_list(text_encoder: TextEncoders) -> list[nn.Module]:
    """The text encoders as a list: one module, or SDXL's two."""
    return [text_encoder] if isinstance(text_encoder, nn.Module) else list(text_encoder)


def is_sdxl_unet(unet: nn.Module) -> bool:
    """Whether `unet` is SDXL's, whose LoRA names are the SGM ones."""
    return is_sdxl_unet_config(getattr(unet, "config", {}))


def unet_lora_namer(unet: nn.Module) -> Callable[[str], str | None]:
    """The kohya name of the Linear/Conv2d at a U-Net module path: the diffusers path for SD1/SD2, the SGM path for
    SDXL (None for a layer the original U-Net has no name for)."""
    if not is_sdxl_unet(unet):
        return lambda path: f"{UNET_PREFIX}.{path}".replace(".", "_")
    layers_per_block, up_block_types = unet.config["layers_per_block"], unet.config["up_block_types"]

    def sgm_name(path: str) -> str | None:
        try:
            return f"{UNET_PREFIX}.{sgm_module_path(path, layers_per_block, up_block_types)}".replace(".", "_")
        except ValueError:
            return None
    return sgm_name


def text_encoder_lora_namers(text_encoder: TextEncoders) -> list[tuple[nn.Module, Callable[[str], str]]]:
    """Each text encoder with the kohya name of its module paths (`lora_te`, or `lora_te1` / `lora_te2`), the
    `text_model.` level included whatever the transformers version."""
    encoders = text_encoder_list(text_encoder)

    def namer(prefix: str) -> Callable[[str], str]:
        return lambda path: f"{prefix}.{path if path.startswith('text_model.') else 'text_model.' + path}".replace(
            ".", "_")
    return [(encoder, namer(prefix)) for encoder, prefix in zip(encoders, text_encoder_prefixes(len(encoders)))]


class LoRANetwork(nn.Module):
    """All LoRA modules for the text encoder(s) and the U-Net, registered under their kohya names.

    Because each `LoRAModule` is a child named by its kohya name, the inherited `state_dict()` already has the exact
    keys of a kohya file: `<lora_name>.lora_down.weight`, `<lora_name>.lora_up.weight`, `<lora_name>.alpha`.
    `module_ranks` ({lora_name: (rank, alpha)}) builds only the named modules with their own ranks, as when a
    network is re-created from a file (see `from_weights`); the conv targets are then always scanned.
    `block_ranks` gives the U-Net's layers the (rank, alpha) of their block instead of `dim`/`conv_dim`.
    """

    def __init__(
        self,
        text_encoder: TextEncoders,
        unet: nn.Module,
        *,
        multiplier: float = 1.0,
        dim: int = 4,
        alpha: float | None = 1.0,
        conv_dim: int | None = None,
        conv_alpha: float | None = None,
        train_unet: bool = True,
        train_text_encoder: bool = True,
        module_ranks: Mapping[str, tuple[int, float | None]] | None = None,
        block_ranks: BlockRanks | None = None,
        make_module: Callable[[str, nn.Linear | nn.Conv2d, int, float | None], nn.Module] = LoRAModule,
    ) -> None:
        super().__init__()
        self.make_module = make_module  # what one target layer gets: a LoRAModule, or a DyLoRA module
        self.trains_random_subsets = False  # every step trains every layer (DyLoRA: see there)
        self.multiplier = multiplier
        self.dim = dim
        self.alpha = alpha
        self.conv_dim = conv_dim
        self.conv_alpha = DEFAULT_CONV_ALPHA if conv_dim is not None and conv_alpha is None else conv_alpha
        self.module_ranks = module_ranks
        self.is_sdxl = is_sdxl_unet(unet)  # SGM names and SDXL's 23 blocks
        self.block_ranks = block_ranks
        self.block_lr_weights: tuple[float, ...] | None = None  # see set_block_lr_weights
        # lora_name -> the base-model module it hooks into; a plain dict so the base model is not registered here.
        self.targets: dict[str, nn.Module] = {}
        self.hooks: dict[str, RemovableHandle] = {}
        self.text_encoder_loras: list[LoRAModule] = []
        self.unet_loras: list[LoRAModule] = []

        if train_text_encoder:
            for encoder, name_of in text_encoder_lora_namers(text_encoder):
                self.text_encoder_loras += self._create_loras(encoder, TEXT_ENCODER_TARGETS, name_of)
        if train_unet:
            scan_convs = conv_dim is not None or module_ranks is not None or (
                block_ranks is not None and block_ranks.conv_dims is not None)
            unet_targets = UNET_TARGETS + (UNET_CONV_TARGETS if scan_convs else ())
            self.unet_loras = self._create_loras(unet, unet_targets, unet_lora_namer(unet))
        for lora in self.text_encoder_loras + self.unet_loras:
            lora.multiplier = multiplier
            self.add_module(lora.lora_name, lora)

    @classmethod
    def from_spec(cls, text_encoder: TextEncoders, unet: nn.Module, spec: NetworkSpec) -> "LoRANetwork":
        """A fresh LoRA (or kohya LoCon when the spec has conv_dim) as `spec` asks, with its block-wise options."""
        conv_dim, conv_alpha = spec.options.get("conv_dim"), spec.options.get("conv_alpha")
        network = cls(
            text_encoder,
            unet,
            multiplier=spec.multiplier,
            dim=spec.dim,
            alpha=spec.alpha,
            conv_dim=conv_dim,
            conv_alpha=conv_alpha,
            train_unet=spec.train_unet,
            train_text_encoder=spec.train_text_encoder,
            block_ranks=block_ranks(spec.options, dim=spec.dim, alpha=spec.alpha, conv_dim=conv_dim,
                                    conv_alpha=conv_alpha, is_sdxl=is_sdxl_unet(unet)),
        )
        network.set_block_lr_weights(spec.options)
        return network

    @classmethod
    def from_weights(
        cls,
        text_encoder: TextEncoders,
        unet: nn.Module,
        weights: str | Path | Mapping[str, torch.Tensor],
        *,
        multiplier: float = 1.0,
        metadata: Mapping[str, str] | None = None,
    ) -> "LoRANetwork":
        """A network shaped as a LoRA file says (each module's own rank and alpha), with its weights loaded.

        `metadata` is not needed: a kohya LoRA's keys say everything about its shape.
        """
        state_dict = _as_state_dict(weights)
        network = cls(text_encoder, unet, multiplier=multiplier, module_ranks=file_module_ranks(state_dict))
        network.load_weights(state_dict)
        return network

    # --- building ---------------------------------------------------------------------------------------------------
    def _create_loras(
        self, root: nn.Module, target_classes: tuple[str, ...], name_of: Callable[[str], str | None]
    ) -> list[LoRAModule]:
        loras: list[LoRAModule] = []
        for path, module in root.named_modules():
            if type(module).__name__ not in target_classes:
                continue
            for child_path, child in module.named_modules():
                if not isinstance(child, (nn.Linear, nn.Conv2d)):
                    continue
                lora_name = name_of(f"{path}.{child_path}")
                if lora_name is None:
                    raise RuntimeError(f"The layer {path}.{child_path} has no kohya name.")
                rank_alpha = self._rank_for(lora_name, child, in_unet=lora_name.startswith(UNET_PREFIX))
                if rank_alpha is None:
                    continue
                if lora_name in self.targets:
                    raise RuntimeError(f"Two modules would share the LoRA name {lora_name}.")
                self.targets[lora_name] = child
                loras.append(self.make_module(lora_name, child, *rank_alpha))
        return loras

    def _rank_for(
        self, lora_name: str, module: nn.Linear | nn.Conv2d, *, in_unet: bool
    ) -> tuple[int, float | None] | None:
        """(rank, alpha) for a module sd-scripts would wrap, None where it gets no LoRA.

        That is: a name the file does not have (`module_ranks`), a block of dim 0 (`block_ranks`), or a 3x3 conv
        when there is no conv dim.
        """
        if self.module_ranks is not None:
            return self.module_ranks.get(lora_name)
        is_conv = isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)
        block = block_index(lora_name) if in_unet and self.block_ranks is not None else None
        if block is not None:
            return self.block_ranks.rank_of(block, conv=is_conv)
        if not is_conv:
            return self.dim, self.alpha
        if self.conv_dim is not None:
            return self.conv_dim, self.conv_alpha
        return None

    @property
    def loras(self) -> list[LoRAModule]:
        return self.text_encoder_loras + self.unet_loras

    # --- applying -------------------------------------------------------------------------------------------------
    def apply_to(self) -> None:
        """Start adding every LoRA to its module's output (forward hooks; the base weights are not touched)."""
        for lora in self.loras:
            if lora.lora_name not in self.hooks:
                self.hooks[lora.lora_name] = self.targets[lora.lora_name].register_forward_hook(lora.add_to_output)

    def restore(self) -> None:
        """Remove every hook: the base model computes exactly what it computed before `apply_to`."""
        for handle in self.hooks.values():
            handle.remove()
        self.hooks.clear()

    def set_multiplier(self, multiplier: float) -> None:
        self.multiplier = multiplier
        for lora in self.loras:
            lora.multiplier = multiplier

    @torch.no_grad()
    def merge_to(self, multiplier: float | None = None) -> None:
        """Add every delta W into the base model's weights (in their dtype) and stop hooking.

        The hooks are removed first so that the update is not counted twice.
        """
        self.restore()
        multiplier = self.multiplier if multiplier is None else multiplier
        for lora in self.loras:
            weight = self.targets[lora.lora_name].weight
            delta = lora.delta_weight().to(weight.device, torch.float32) * multiplier
            weight.copy_((weight.float() + delta).to(weight.dtype))

    # --- training -------------------------------------------------------------------------------------------------
    def set_block_lr_weights(self, options: Mapping[str, object]) -> None:
        """Train each U-Net block at unet lr x its weight, from the typed network options (none given: off).

        Also meant for a network continued from a file, as sd-scripts applies the weights with `dim_from_weights`.
        """
        self.block_lr_weights = block_lr_weights(options, is_sdxl=self.is_sdxl)

    def prepare_optimizer_params(
        self, text_encoder_lr: float | None, unet_lr: float | None, default_lr: float
    ) -> list[dict]:
        """Optimizer parameter groups, text encoder first; a missing rate falls back to `default_lr`.

        With block weights the U-Net has one group per block, in the order its layers are found, at unet lr x the
        block's weight (x 1 for a layer outside the blocks), as in sd-scripts. A group whose rate is 0 is left out
        and frozen, so that part of the network is not trained (sd-scripts leaves it out too).
        """
        self.requires_grad_(True)
        unet_lr = default_lr if unet_lr is None else unet_lr
        parts = [(self.text_encoder_loras, default_lr if text_encoder_lr is None else text_encoder_lr)]
        if self.block_lr_weights is None:
            parts.append((self.unet_loras, unet_lr))
        else:
            by_block: dict[int | None, list[nn.Module]] = {}
            for lora in self.unet_loras:
                by_block.setdefault(block_index(lora.lora_name), []).append(lora)
            parts += [(loras, unet_lr * (1.0 if block is None else self.block_lr_weights[block]))
                      for block, loras in by_block.items()]
        groups: list[dict] = []
        for loras, lr in parts:
            if not loras or lr == 0:
                for lora in loras:
                    lora.requires_grad_(False)
                continue
            groups.append({"params": [p for lora in loras for p in lora.parameters()], "lr": lr})
        return groups

    def weights_cast_once(self, dtype: torch.dtype | None) -> AbstractContextManager[None]:
        """Inside, the modules compute with their weights cast to autocast's `dtype` (None: full precision) by one
        operation for the whole network, and their gradients are cast back by one (see weight_cast)."""
        return cast_together(self.loras, dtype)

    # --- weights --------------------------------------------------------------------------------------------------
    def load_weights(self, weights: str | Path | Mapping[str, torch.Tensor]) -> None:
        """Load a kohya LoRA (file or state dict) into the modules that match it.

        Keys of modules this network does not have are ignored (e.g. text encoder keys when training the U-Net
        only); a file without `alpha` keys means alpha = rank, as in the first LoRA files. Ranks must match.
        """
        state_dict = _as_state_dict(weights)
        own = super().state_dict()
        matched: dict[str, torch.Tensor] = {}
        for lora in self.loras:
            down_key = f"{lora.lora_name}.lora_down.weight"
            if down_key not in state_dict:
                continue
            for key in (down_key, f"{lora.lora_name}.lora_up.weight"):
                tensor = state_dict[key]
                if tensor.shape != own[key].shape:
                    raise UserFacingError(
                        f"The LoRA file does not fit this network: {key} has shape {tuple(tensor.shape)} but "
                        f"{tuple(own[key].shape)} is needed; use the same network dim (and conv dim) as the file."
                    )
                matched[key] = tensor
            alpha = state_dict.get(f"{lora.lora_name}.alpha")
            matched[f"{lora.lora_name}.alpha"] = (
                torch.tensor(float(lora.rank)) if alpha is None else alpha.reshape(())
            )
        if not matched:
            raise UserFacingError(
                "None of the LoRA file's weights belong to this model's layers; "
                "choose a LoRA made for this base model's family."
            )
        self.load_state_dict(matched, strict=False)


def file_module_ranks(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, float | None]]:
    """{lora_name: (rank, alpha)} of a kohya-format file (alpha None when the file has none, as the first LoRAs)."""
    ranks: dict[str, tuple[int, float | None]] = {}
    for key, tensor in state_dict.items():
        if key.endswith(".lora_down.weight"):
            name = key.removesuffix(".lora_down.weight")
            alpha = state_dict.get(f"{name}.alpha")
            ranks[name] = (tensor.shape[0], None if alpha is None else float(alpha.reshape(())))
    if not ranks:
        raise UserFacingError(
            "This file holds no kohya LoRA weights (no 'lora_down' keys); "
            "choose a LoRA made by sd-scripts or this trainer."
        )
    return ranks


def _as_state_dict(weights: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(weights, Mapping):
        return dict(weights)
    state_dict, _ = load_lora_file(weights)
    return state_dict

