"""LyCORIS networks (LoCon, LoHa, LoKr, IA3; with DoRA and Tucker) for Stable Diffusion 1.x, 2.x and SDXL.

The algorithms are lycoris-lora's own: `LycorisNetworkKohya` picks the layers of a preset and builds one LyCORIS
module per layer, and `lycoris.modules.get_module/make_module` rebuild a module from a file's tensors. This class
only holds those modules under their kohya names (`lora_unet_...`, `lora_te_text_model_...`), so its `state_dict()`
is exactly what sd-scripts + LyCORIS save, and adds the `Network` interface of `base.py` around them.

What lycoris-lora 4.1.3 does not do right for SD1/SD2 is handled here rather than passed on to users:

* Its presets "full", "full-lin" and "unet-only" target the class `TimestepEmbedding` and the names
  `time_embedding.linear_1/2` at once, so building them on a diffusers U-Net fails with "duplicated lora name". The
  class is dropped where the names already cover it, which gives the layers sd-scripts + LyCORIS always trained.
  "attn-only" names sd-scripts' attention class `CrossAttention`, which diffusers calls `Attention`.
  LyCORIS matches a preset's target names from the start of a module's path, so the leaf names of the "ia3"
  preset (`to_k`, `ff.net.2`, `k_proj`...) would match nothing; they are matched as the last parts of the path.
  `apply_preset` sets class attributes: they are restored after each build, so one network never shapes the next.
* transformers 5 dropped the `text_model.` level of `CLIPTextModel`; LyCORIS sees the text encoder through a small
  module that puts it back, so the names are the `lora_te_text_model_...` every LoRA loader expects.
* SDXL: sd-scripts hands LyCORIS its own SGM U-Net, so SDXL LyCORIS files have the SGM names
  (`lora_unet_input_blocks_4_1_...`) and `lora_te1_` / `lora_te2_`. LyCORIS names our diffusers U-Net's modules by
  their diffusers paths; each U-Net module is renamed to its SGM name once built (`sgm_names.py`). The SGM U-Net has
  no modules named `conv_in`, `conv_out`, `time_embedding.linear_1/2` and no `TimestepEmbedding` class, so with
  sd-scripts the presets never reach those layers on SDXL; they are left out here too, so the files are the same.
* LyCORIS logs every build at INFO and prints a line per LoHa/LoKr layer when `dropout` is set; its logger is kept
  at WARNING during our calls and the printed lines become one warning each.
* Its `merge_to` applies alpha/rank twice for LoHa and LoKr; `merge_to` here adds the weight difference each
  module's own forward adds, so a merged model computes what the applied network computed. Its `make_module`
  drops IA3's on_input flag and misreads the shapes of LoKr convolutions and Tucker cores; those two are built
  here with LyCORIS' own module classes, from the options the file's shapes imply.

LyCORIS modules replace the forward of the layer they sit on while applied; `restore()` gives every layer back its
own forward, so the base model computes exactly what it did before.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from lycoris.config import PRESET
from lycoris.functional import factorization
from lycoris.kohya import LycorisNetworkKohya
from lycoris.logging import logger as lycoris_logger
from lycoris.modules import IA3Module, LoConModule, LohaModule, LokrModule, get_module, make_module
from lycoris.modules.base import LycorisBaseModule
from torch import nn

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.base import NetworkSpec, TextEncoders
from sd_scripts.networks.lora import is_sdxl_unet, text_encoder_lora_namers, text_encoder_list
from sd_scripts.networks.lora import unet_lora_namer

logger = logging.getLogger("sd_scripts.networks")

TEXT_ENCODER_PREFIX = LycorisNetworkKohya.LORA_PREFIX_TEXT_ENCODER  # "lora_te"
UNET_PREFIX = LycorisNetworkKohya.LORA_PREFIX_UNET  # "lora_unet"
DEFAULT_PRESET = "full"  # what lycoris.kohya uses when network_args has no preset=
TIME_EMBEDDING_NAMES = frozenset({"time_embedding.linear_1", "time_embedding.linear_2"})
SDXL_ABSENT_NAMES = TIME_EMBEDDING_NAMES | {"conv_in", "conv_out"}  # no module of sd-scripts' SGM U-Net has them
# The class attributes `LycorisNetworkKohya.apply_preset` sets.
PRESET_ATTRIBUTES = ("ENABLE_CONV", "UNET_TARGET_REPLACE_MODULE", "UNET_TARGET_REPLACE_NAME",
                     "TEXT_ENCODER_TARGET_REPLACE_MODULE", "TEXT_ENCODER_TARGET_REPLACE_NAME", "MODULE_ALGO_MAP",
                     "NAME_ALGO_MAP", "USE_FNMATCH", "TARGET_EXCLUDE_NAME")
SUPPORTED_MODULES = (LoConModule, LohaModule, LokrModule, IA3Module)
_MISSING = object()
_building = threading.Lock()  # class-level presets: one build at a time


def sd_preset(name: str, *, sdxl: bool = False) -> dict[str, Any]:
    """LyCORIS' built-in preset `name`, made to select on a diffusers model the layers it selects with sd-scripts
    (on SDXL: those sd-scripts' SGM U-Net has, see the module docstring)."""
    preset = copy.deepcopy(PRESET[name])
    modules = list(preset.get("unet_target_module", []))
    if sdxl:
        preset["unet_target_name"] = [name for name in preset.get("unet_target_name", [])
                                      if name not in SDXL_ABSENT_NAMES]
    if "TimestepEmbedding" in modules and (sdxl or TIME_EMBEDDING_NAMES <= set(preset.get("unet_target_name", []))):
        modules.remove("TimestepEmbedding")
    if "CrossAttention" in modules:
        modules.append("Attention")
    preset["unet_target_module"] = modules
    for key in ("unet_target_name", "text_encoder_target_name"):
        preset[key] = [_path_pattern(target) for target in preset.get(key, [])]
    preset["name_algo_map"] = {_path_pattern(target): config
                               for target, config in preset.get("name_algo_map", {}).items()}
    preset.setdefault("module_algo_map", {})
    preset.setdefault("exclude_name", [])
    preset["use_fnmatch"] = False
    return preset


def _path_pattern(name: str) -> str:
    """A regular expression matching module paths that are `name` or end with `.name`."""
    return rf"(?:.*\.)?{re.escape(name)}$"


class _TextModelLevel(nn.Module):
    """Shows a transformers 5 `CLIPTextModel` with the `text_model.` level its LoRA key names have always had."""

    def __init__(self, text_encoder: nn.Module) -> None:
        super().__init__()
        self.text_model = text_encoder


def _named_text_encoder(text_encoder: nn.Module) -> nn.Module:
    return text_encoder if hasattr(text_encoder, "text_model") else _TextModelLevel(text_encoder)


def _named_text_encoders(text_encoder: TextEncoders) -> nn.Module | list[nn.Module]:
    """What LycorisNetworkKohya is given: one encoder (`lora_te`), or a list of two (it names them te1, te2)."""
    encoders = [_named_text_encoder(encoder) for encoder in text_encoder_list(text_encoder)]
    return encoders[0] if len(encoders) == 1 else encoders


def _rename_to_sgm(loras: list[LycorisBaseModule], unet: nn.Module) -> None:
    """Give LyCORIS' U-Net modules, named by diffusers paths, the SGM names sd-scripts' SDXL files use."""
    sgm_name_of = unet_lora_namer(unet)
    sgm_names = {f"{UNET_PREFIX}_{path}".replace(".", "_"): sgm_name_of(path) for path, module in unet.named_modules()
                 if isinstance(module, (nn.Linear, nn.Conv2d))}
    for lora in loras:
        name = sgm_names.get(lora.lora_name)
        if name is None:
            raise RuntimeError(f"The SDXL layer {lora.lora_name} has no SGM name.")
        lora.lora_name = name


@contextlib.contextmanager
def _quiet_lycoris() -> Iterator[None]:
    """LyCORIS' logger at WARNING, and what it prints turned into one warning per distinct line."""
    level = lycoris_logger.level
    lycoris_logger.setLevel(logging.WARNING)
    printed = io.StringIO()  # sys.stdout is process-wide: used only while a network is built, before training
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        lycoris_logger.setLevel(level)
        for line in dict.fromkeys(printed.getvalue().splitlines()):
            logger.warning("LyCORIS: %s", line.strip())


@contextlib.contextmanager
def _preset_applied(preset: Mapping[str, Any]) -> Iterator[None]:
    """`LycorisNetworkKohya` with `preset` in its class attributes for the duration, as it was afterwards."""
    with _building:
        saved = {name: LycorisNetworkKohya.__dict__.get(name, _MISSING) for name in PRESET_ATTRIBUTES}
        try:
            LycorisNetworkKohya.apply_preset(preset)
            yield
        finally:
            for name, value in saved.items():
                if value is _MISSING:
                    if name in LycorisNetworkKohya.__dict__:
                        delattr(LycorisNetworkKohya, name)
                else:
                    setattr(LycorisNetworkKohya, name, value)


def _module_from_file(state_dict: Mapping[str, torch.Tensor], lora_name: str, target: nn.Module) -> LycorisBaseModule:
    """The LyCORIS module the file's tensors under `lora_name` describe, built on `target` with the file's shapes."""
    kind, params = get_module(state_dict, lora_name)
    if kind not in SUPPORTED_MODULES:
        what = f"a LyCORIS {kind.name} layer" if kind is not None else "tensors of an unknown kind"
        raise UserFacingError(f"The file has {what} at {lora_name}, which this trainer cannot continue; choose a "
                              "LoCon, LoHa, LoKr or IA3 file.")
    try:
        if kind is IA3Module:  # make_module drops the on_input flag, so IA3 is built with it here
            weight, on_input = params
            module = IA3Module(lora_name, target, train_on_input=bool(on_input))
            with torch.no_grad():
                module.weight.copy_(weight.reshape(module.weight.shape))
            return module
        if kind is LokrModule:  # make_module misreads conv and Tucker LoKr shapes
            return _lokr_module(dict(zip(LokrModule.weight_list, params)), lora_name, target)
        return make_module(kind, params, lora_name, target)
    except (RuntimeError, TypeError, ValueError, StopIteration):
        raise UserFacingError(f"The file's {kind.name} layer {lora_name} does not fit this model's layer of that "
                              "name; choose a LyCORIS made for this base model.") from None


def _lokr_module(tensors: Mapping[str, torch.Tensor | None], lora_name: str, target: nn.Module) -> LokrModule:
    """A `LokrModule` built with the options its tensors' shapes imply; the tensors are loaded afterwards.

    w1 (or w1_a @ w1_b) is the smaller Kronecker factor: its shape says how out and in dims were split (`factor`);
    a factorised w1 means decompose_both; w1_a, the Tucker core or w2_a carry the rank; two full factors mean
    full_matrix (LyCORIS then ignores alpha).
    """
    w1, w1_a, w2, w2_a, t2 = (tensors[name] for name in ("lokr_w1", "lokr_w1_a", "lokr_w2", "lokr_w2_a", "lokr_t2"))
    out_split, in_split = w1.shape if w1 is not None else (w1_a.shape[0], tensors["lokr_w1_b"].shape[1])
    out_dim, in_dim = target.weight.shape[:2]
    factor = next(f for f in (-1, out_split, in_split)
                  if (factorization(out_dim, f)[0], factorization(in_dim, f)[0]) == (out_split, in_split))
    if w1_a is not None:
        rank = w1_a.shape[1]
    elif t2 is not None:
        rank = t2.shape[0]
    elif w2_a is not None:
        rank = w2_a.shape[1]
    else:
        rank = 1
    alpha = tensors["alpha"]
    return LokrModule(lora_name, target, 1.0, rank, None if alpha is None else float(alpha), use_tucker=t2 is not None,
                      decompose_both=w1 is None, factor=factor, weight_decompose=tensors["dora_scale"] is not None,
                      full_matrix=w1 is not None and w2 is not None)


def _forward_update(lora: LycorisBaseModule) -> torch.Tensor:
    """The weight difference the module's forward adds at multiplier 1 (before DoRA's rescaling)."""
    if isinstance(lora, LoConModule):
        return lora.make_weight(lora.org_weight.device) * lora.scale
    return lora.get_weight(lora.shape) * lora.scalar


class LycorisNetwork(nn.Module):
    """LyCORIS modules for one text encoder and one U-Net, registered under their kohya names.

    `text_encoder_loras` and `unet_loras` are lycoris-lora module objects; each is a child named by its kohya name,
    so the inherited `state_dict()` (via LyCORIS' own per-module state dicts) has the file's exact keys.
    """

    def __init__(self, text_encoder_loras: list[LycorisBaseModule], unet_loras: list[LycorisBaseModule], *,
                 multiplier: float = 1.0) -> None:
        super().__init__()
        self.text_encoder_loras = list(text_encoder_loras)
        self.unet_loras = list(unet_loras)
        self.applied = False
        for lora in self.loras:
            self.add_module(lora.lora_name, lora)
        self.set_multiplier(multiplier)

    @classmethod
    def from_spec(cls, text_encoder: TextEncoders, unet: nn.Module, spec: NetworkSpec) -> LycorisNetwork:
        """A fresh network of `spec`, built by `LycorisNetworkKohya` as `lycoris.kohya.create_network` would.

        As in LyCORIS, conv_dim and conv_alpha default to the dim and alpha.
        """
        options = spec.options
        conv_dim = int(options.get("conv_dim", spec.dim))
        conv_alpha = options.get("conv_alpha", spec.alpha)
        sdxl = is_sdxl_unet(unet)
        preset = sd_preset(str(options.get("preset", DEFAULT_PRESET)), sdxl=sdxl)
        with _preset_applied(preset), _quiet_lycoris():
            built = LycorisNetworkKohya(
                _named_text_encoders(text_encoder),
                unet,
                multiplier=spec.multiplier,
                lora_dim=spec.dim,
                alpha=spec.alpha,
                conv_lora_dim=conv_dim,
                conv_alpha=conv_dim if conv_alpha is None else conv_alpha,
                rank_dropout=options.get("rank_dropout", 0.0),
                module_dropout=options.get("module_dropout", 0.0),
                use_tucker=options.get("use_tucker", False),
                network_module=str(options.get("algo", spec.kind.algo)),
                warn_on_unmatched=False,
                # handed on to every module, as lycoris.kohya.create_network does
                weight_decompose=options.get("dora_wd", False),
                factor=options.get("factor", -1),
                decompose_both=options.get("decompose_both", False),
                full_matrix=options.get("full_matrix", False),
                bypass_mode=False,
            )
        if sdxl:
            _rename_to_sgm(built.unet_loras, unet)
        return cls(built.text_encoder_loras if spec.train_text_encoder else [],
                   built.unet_loras if spec.train_unet else [], multiplier=spec.multiplier)

    @classmethod
    def from_weights(
        cls,
        text_encoder: TextEncoders,
        unet: nn.Module,
        state_dict: Mapping[str, torch.Tensor],
        *,
        multiplier: float = 1.0,
        metadata: Mapping[str, str] | None = None,
    ) -> LycorisNetwork:
        """A network shaped as a LyCORIS file with kohya names says: each layer's own algorithm, ranks and options.

        `metadata` is not needed: LyCORIS' tensor names and shapes say everything about each module.
        """
        names = {key.split(".", 1)[0] for key in state_dict if "." in key}
        built: dict[str, list[LycorisBaseModule]] = {TEXT_ENCODER_PREFIX: [], UNET_PREFIX: []}
        parts = [(TEXT_ENCODER_PREFIX, encoder, name_of) for encoder, name_of in text_encoder_lora_namers(text_encoder)]
        with _quiet_lycoris():
            for prefix, root, name_of in parts + [(UNET_PREFIX, unet, unet_lora_namer(unet))]:
                for path, module in root.named_modules():
                    lora_name = name_of(path) if path else None
                    if lora_name in names:
                        built[prefix].append(_module_from_file(state_dict, lora_name, module))
        found = {lora.lora_name for loras in built.values() for lora in loras}
        if not found:
            raise UserFacingError("This file holds no LyCORIS layers with kohya names (lora_unet_..., lora_te_...); "
                                  "choose a LyCORIS made by sd-scripts or this trainer.")
        unknown = sorted(names - found)
        if unknown:
            raise UserFacingError(f"The LyCORIS file has weights for layers this model does not have, such as "
                                  f"{unknown[0]}; choose a LyCORIS made for this base model's family.")
        network = cls(built[TEXT_ENCODER_PREFIX], built[UNET_PREFIX], multiplier=multiplier)
        network._copy_file_tensors(state_dict)
        return network

    @property
    def loras(self) -> list[LycorisBaseModule]:
        return self.text_encoder_loras + self.unet_loras

    @property
    def trains_random_subsets(self) -> bool:
        """module_dropout skips whole modules at random in training."""
        return any(getattr(lora, "module_dropout", 0.0) > 0 for lora in self.loras)

    def weights_cast_once(self, dtype: torch.dtype | None) -> contextlib.nullcontext[None]:
        """Nothing to do: LyCORIS' modules build their weights in their own forward, where autocast casts them."""
        return contextlib.nullcontext()

    # --- applying -------------------------------------------------------------------------------------------------
    def apply_to(self) -> None:
        """Make every layer compute with its LyCORIS module (LyCORIS replaces the layer's forward)."""
        if not self.applied:
            for lora in self.loras:
                lora.apply_to()
            self.applied = True

    def restore(self) -> None:
        """Give every layer back its own forward: the base model computes exactly what it did before `apply_to`."""
        if not self.applied:
            return
        for lora in reversed(self.loras):
            lora.restore()
            layer = lora.org_module[0]
            # LyCORIS puts the layer's own bound forward back as an instance attribute; the class's is the same.
            forward = layer.__dict__.get("forward")
            if getattr(forward, "__self__", None) is layer and forward.__func__ is type(layer).forward:
                del layer.forward
        self.applied = False

    def set_multiplier(self, multiplier: float) -> None:
        self.multiplier = multiplier
        for lora in self.loras:
            lora.multiplier = multiplier

    @torch.no_grad()
    def merge_to(self, multiplier: float | None = None) -> None:
        """Write into each base weight what the applied layer computes with (in the weight's dtype); stop applying.

        With DoRA the multiplier acts as in LyCORIS: it scales the magnitude rescaling of (W + delta W).
        """
        self.restore()
        multiplier = self.multiplier if multiplier is None else multiplier
        for lora in self.loras:
            weight = lora.org_weight
            training = lora.training
            lora.eval()  # rank dropout is for training only
            try:
                if isinstance(lora, IA3Module):
                    merged = lora.get_merged_weight(multiplier)[0]
                else:
                    base = weight.to(torch.promote_types(weight.dtype, torch.float32))
                    update = _forward_update(lora).to(weight.device, base.dtype)
                    merged = (lora.apply_weight_decompose(base + update, multiplier) if lora.wd
                              else base + update * multiplier)
            finally:
                lora.train(training)
            weight.copy_(merged.to(weight.device, weight.dtype))

    # --- training -------------------------------------------------------------------------------------------------
    def prepare_optimizer_params(
        self, text_encoder_lr: float | None, unet_lr: float | None, default_lr: float
    ) -> list[dict]:
        """Optimizer parameter groups, text encoder first; a missing rate falls back to `default_lr`.

        A part whose rate is 0 is left out and frozen, so it is not trained (sd-scripts does the same).
        """
        self.requires_grad_(True)
        groups: list[dict] = []
        for loras, lr in ((self.text_encoder_loras, text_encoder_lr), (self.unet_loras, unet_lr)):
            lr = default_lr if lr is None else lr
            if not loras or lr == 0:
                for lora in loras:
                    lora.requires_grad_(False)
                continue
            groups.append({"params": [p for lora in loras for p in lora.parameters()], "lr": lr})
        return groups

    # --- weights --------------------------------------------------------------------------------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """LyCORIS' saved tensors under the file's keys, detached (LyCORIS computes some of them, e.g. w * scalar)."""
        state = super().state_dict(*args, **kwargs)
        for key, value in state.items():
            state[key] = value.detach()
        return state

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load the file's tensors of the layers this network has; refuse, in one sentence, a file that does not fit.

        Layers the network does not have are ignored (e.g. the text encoder's when training the U-Net only). A layer
        must have the same tensors, shapes and alpha as here: LyCORIS fixes each module's scale when building it.
        """
        own = self._tensors_by_layer(self.state_dict())
        theirs = self._tensors_by_layer(state_dict)
        matched: dict[str, torch.Tensor] = {}
        for name, tensors in own.items():
            if name not in theirs:
                continue
            if set(theirs[name]) != set(tensors):
                raise UserFacingError(
                    f"The LyCORIS file does not fit this network: its layer {name} holds "
                    f"{', '.join(sorted(theirs[name]))} where this one holds {', '.join(sorted(tensors))}; use the "
                    "file's network type and options, or continue with its own dims (dim_from_weights)."
                )
            for suffix, tensor in theirs[name].items():
                mine = tensors[suffix]
                tensor = _as_shape_of(tensor, mine)
                if tensor.shape != mine.shape:
                    raise UserFacingError(
                        f"The LyCORIS file does not fit this network: {name}.{suffix} has shape {tuple(tensor.shape)} "
                        f"but {tuple(mine.shape)} is needed; use the file's dims, or continue with them "
                        "(dim_from_weights)."
                    )
                if suffix in ("alpha", "on_input") and not math.isclose(float(tensor), float(mine), rel_tol=1e-3):
                    raise UserFacingError(
                        f"The LyCORIS file's {suffix} for {name} is {float(tensor):g} but this network's is "
                        f"{float(mine):g}; use the file's alpha and preset, or continue with its own settings "
                        "(dim_from_weights)."
                    )
                matched[f"{name}.{suffix}"] = tensor
        if not matched:
            raise UserFacingError("None of the LyCORIS file's weights belong to this network's layers; choose a "
                                  "file of the same network type made for this base model's family.")
        self.load_state_dict(matched, strict=False)

    def _copy_file_tensors(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Every tensor of the file into the modules just built from it, so `state_dict()` gives the file back."""
        own = self.state_dict()
        unused = sorted(set(state_dict) - set(own))
        if unused:
            raise UserFacingError(f"The LyCORIS file holds tensors this trainer cannot continue, such as {unused[0]}; "
                                  "choose a LoCon, LoHa, LoKr or IA3 file without extras.")
        self.load_state_dict({key: _as_shape_of(tensor, own[key]) for key, tensor in state_dict.items()})

    @staticmethod
    def _tensors_by_layer(state_dict: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        layers: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state_dict.items():
            name, _, suffix = key.partition(".")
            layers.setdefault(name, {})[suffix] = tensor
        return layers


def _as_shape_of(tensor: torch.Tensor, mine: torch.Tensor) -> torch.Tensor:
    """A one-element tensor in the shape this network keeps it in (some tools write alpha as [1], not [])."""
    return tensor.reshape(mine.shape) if tensor.numel() == 1 == mine.numel() else tensor
