"""Optimizers under sd-scripts' names (`--optimizer_type`, case-insensitive) with `--optimizer_args k=v` options.

8-bit optimizers come from bitsandbytes (which also runs on CPU), Adafactor from transformers; DAdaptation,
Prodigy and lion-pytorch are optional packages used only when they are installed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

import torch

from sd_scripts.args import OPTIMIZERS
from sd_scripts.errors import UserFacingError

# sd-scripts' spellings, lower-cased -> the name we show.
OPTIMIZER_NAMES = {name.lower(): name for name in OPTIMIZERS}


@dataclass
class BuiltOptimizer:
    optimizer: torch.optim.Optimizer
    name: str
    description: str  # "module.Class(k=v,...)" as sd-scripts writes it into ss_optimizer
    relative_step: bool  # Adafactor finds its own learning rate: the schedule must follow the optimizer
    notes: list[str]


def resolve_optimizer_name(optimizer_type: str, use_8bit_adam: bool = False, use_lion_optimizer: bool = False) -> str:
    """The canonical name for `optimizer_type`, honouring sd-scripts' deprecated flags; "" means AdamW."""
    if not optimizer_type:
        if use_8bit_adam and use_lion_optimizer:
            raise UserFacingError("use_8bit_adam and use_lion_optimizer are both set; choose one optimizer with optimizer_type.")
        optimizer_type = "AdamW8bit" if use_8bit_adam else "Lion" if use_lion_optimizer else "AdamW"
    name = OPTIMIZER_NAMES.get(optimizer_type.strip().lower())
    if name is None:
        raise UserFacingError(
            f"The optimizer '{optimizer_type}' is not supported; choose one of {', '.join(OPTIMIZER_NAMES.values())}."
        )
    return name


def parse_optimizer_args(items: list[str]) -> dict[str, Any]:
    """Parse sd-scripts' "key=value" optimizer options; values are Python literals read with ast.literal_eval.

    "betas=0.9,0.99" gives a tuple. Items are also split on spaces (a GUI may write them as one string); a piece
    without "=" continues the previous value, so "betas=0.9, 0.99" works too.
    """
    pieces: list[str] = []
    for item in items:
        for piece in item.split():
            if "=" in piece or not pieces:
                pieces.append(piece)
            else:
                pieces[-1] += piece
    options: dict[str, Any] = {}
    for piece in pieces:
        key, equals, text = piece.partition("=")
        if not equals or not key or not text:
            raise UserFacingError(f"The optimizer option '{piece}' is not of the form name=value; write it like weight_decay=0.01.")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise UserFacingError(
                f"The optimizer option '{piece}' has a value that is not a number, True/False or a list; "
                "put text values in quotes, like name='value'."
            ) from None
    return options


def build_optimizer(
    name: str, param_groups: list[dict], learning_rate: float, options: dict[str, Any]
) -> BuiltOptimizer:
    """Create the optimizer `name` (a canonical name from resolve_optimizer_name) over `param_groups`."""
    options = dict(options)
    notes: list[str] = []
    relative_step = False
    if name == "AdamW":
        optimizer_class = torch.optim.AdamW
        # One fused kernel for all LoRA tensors instead of a loop over hundreds of small ones: several times faster.
        options.setdefault("fused", True)
    elif name == "AdamW8bit":
        optimizer_class = _import("bitsandbytes.optim", "AdamW8bit", "bitsandbytes")
    elif name == "Lion":
        if importlib.util.find_spec("lion_pytorch") is not None:
            optimizer_class = _import("lion_pytorch", "Lion", "lion-pytorch")
        else:
            optimizer_class = _import("bitsandbytes.optim", "Lion32bit", "bitsandbytes")
    elif name == "Lion8bit":
        optimizer_class = _import("bitsandbytes.optim", "Lion8bit", "bitsandbytes")
    elif name in ("SGDNesterov", "SGDNesterov8bit"):
        options.setdefault("momentum", 0.9)
        options["nesterov"] = True
        if name == "SGDNesterov":
            optimizer_class = torch.optim.SGD
        else:
            optimizer_class = _import("bitsandbytes.optim", "SGD8bit", "bitsandbytes")
    elif name in ("DAdaptation", "DAdaptAdam", "DAdaptLion", "DAdaptSGD"):
        class_name = "DAdaptAdam" if name == "DAdaptation" else name
        optimizer_class = _import("dadaptation", class_name, "dadaptation")
        notes += _adaptive_lr_notes(name, learning_rate, param_groups)
    elif name == "Prodigy":
        optimizer_class = _import("prodigyopt", "Prodigy", "prodigyopt")
        notes += _adaptive_lr_notes(name, learning_rate, param_groups)
    elif name == "AdaFactor":
        optimizer_class = _import("transformers.optimization", "Adafactor", "transformers")
        options.setdefault("relative_step", True)
        if options.get("warmup_init") and not options["relative_step"]:
            options["relative_step"] = True
            notes.append("Adafactor's warmup_init needs relative_step, so relative_step was turned on.")
        relative_step = bool(options["relative_step"])
        if relative_step:
            # Adafactor then computes its own step size; the learning rate only serves as the schedule's start value.
            param_groups = [{key: value for key, value in group.items() if key != "lr"} for group in param_groups]
            learning_rate = None
            notes.append("Adafactor with relative_step finds its own learning rate; the learning rate schedule is not used.")
    else:
        raise AssertionError(f"resolve_optimizer_name returned an unknown optimizer {name!r}")

    try:
        optimizer = optimizer_class(param_groups, lr=learning_rate, **options)
    except TypeError as exc:
        raise UserFacingError(
            f"The optimizer {name} does not accept the options {sorted(options)} ({exc}); fix optimizer_args."
        ) from None
    description = f"{optimizer_class.__module__}.{optimizer_class.__name__}"
    if options:
        description += "(" + ",".join(f"{key}={value}" for key, value in options.items()) + ")"
    return BuiltOptimizer(optimizer, name, description, relative_step, notes)


def _import(module_name: str, class_name: str, package: str) -> type:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise UserFacingError(
            f"This optimizer needs the Python package '{package}', which is not installed; install it or choose AdamW."
        ) from None
    return getattr(module, class_name)


def _adaptive_lr_notes(name: str, learning_rate: float, param_groups: list[dict]) -> list[str]:
    """D-Adaptation and Prodigy expect a learning rate near 1.0 and one rate for all groups."""
    notes = []
    if learning_rate <= 0.1:
        notes.append(f"{name} adapts the learning rate itself and usually wants learning_rate around 1.0, not {learning_rate}.")
    if len({group.get("lr", learning_rate) for group in param_groups}) > 1:
        notes.append(f"{name} works best with one learning rate for all parts; unet_lr and text_encoder_lr differ.")
    return notes
