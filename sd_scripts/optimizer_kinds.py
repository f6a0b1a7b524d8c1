"""Which optimizers exist, what each is and which options it takes: the one table the trainer, the checks before
the model loads, the wizard's question and its help read, so that no part offers an optimizer another part refuses.

Names are sd-scripts' `--optimizer_type` spellings (matched in any letter case, as sd-scripts does). A name that is
not in the table is looked up as sd-scripts looks it up: `package.module.Class` is imported, a plain name is a
class of `torch.optim`. Options are sd-scripts' `--optimizer_args` "key=value" strings with Python literal values.

This module is free of heavy imports: the wizard reads it on the way to the first popup. Only `optimizer_class`
imports the optimizer's package, when a training (or its pre-flight check) needs the class.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sd_scripts.errors import UserFacingError
from sd_scripts.untrusted import shown

# The option the wizard puts in for the learning-rate-free optimizers that take it, as the popups did for
# DAdaptation (without it LoRAs come out blank). Prodigy's use_bias_correction and safeguard_warmup are left to the
# user: the popups and sd-scripts set neither, and with safeguard_warmup d stayed at d0 through a short run.
_DECOUPLE = (("decouple", "True"),)


@dataclass(frozen=True)
class OptimizerKind:
    """One optimizer.

    target:             "module.Class" the trainer builds.
    package:            the pip package that provides it (named when it is missing).
    help:               what it is, in a few words, for the wizard's help text.
    learning_rate_free: finds its own step size d (param_group["d"]); the learning rate only scales it (1.0).
    one_learning_rate:  refuses parameter groups with different non-zero learning rates (raises at its first step).
    schedule_free:      averages its weights instead of following a schedule: constant learning rate, and
                        optimizer.eval() before saving or sampling, optimizer.train() to go on.
    takes_betas:        takes a pair of Adam betas; the wizard's default betas are left out otherwise.
    wizard_args:        option texts the wizard sets when the user picks it.
    offered:            shown by the wizard's question; the others are accepted from settings files (their names
                        are sd-scripts' too) but are variants nobody needs to be offered.
    """

    name: str
    target: str
    package: str
    help: str
    learning_rate_free: bool = False
    one_learning_rate: bool = False
    schedule_free: bool = False
    takes_betas: bool = True
    wizard_args: tuple[tuple[str, str], ...] = ()
    offered: bool = True


def _kinds(*kinds: OptimizerKind) -> dict[str, OptimizerKind]:
    return {kind.name: kind for kind in kinds}


OPTIMIZER_KINDS: dict[str, OptimizerKind] = _kinds(
    OptimizerKind("AdamW", "torch.optim.AdamW", "torch",
                  "the standard (32-bit state), default without an NVIDIA GPU"),
    OptimizerKind("AdamW8bit", "bitsandbytes.optim.AdamW8bit", "bitsandbytes",
                  "AdamW with 8-bit state (less memory), default with an NVIDIA GPU"),
    OptimizerKind("PagedAdamW8bit", "bitsandbytes.optim.PagedAdamW8bit", "bitsandbytes",
                  "AdamW8bit whose state moves to CPU memory when the GPU's runs out"),
    OptimizerKind("PagedAdamW", "bitsandbytes.optim.PagedAdamW", "bitsandbytes",
                  "AdamW whose state moves to CPU memory when the GPU's runs out", offered=False),
    OptimizerKind("PagedAdamW32bit", "bitsandbytes.optim.PagedAdamW32bit", "bitsandbytes",
                  "the same as PagedAdamW", offered=False),
    OptimizerKind("Lion", "lion_pytorch.Lion", "lion-pytorch",
                  "follows the gradient's sign with less memory, wants about a third of AdamW's learning rate"),
    OptimizerKind("Lion8bit", "bitsandbytes.optim.Lion8bit", "bitsandbytes", "Lion with 8-bit state"),
    OptimizerKind("PagedLion8bit", "bitsandbytes.optim.PagedLion8bit", "bitsandbytes",
                  "Lion8bit whose state moves to CPU memory when the GPU's runs out", offered=False),
    OptimizerKind("SGDNesterov", "torch.optim.SGD", "torch",
                  "SGD with Nesterov momentum, wants a far higher learning rate", takes_betas=False),
    OptimizerKind("SGDNesterov8bit", "bitsandbytes.optim.SGD8bit", "bitsandbytes",
                  "SGDNesterov with 8-bit state", takes_betas=False),
    OptimizerKind("DAdaptation", "dadaptation.experimental.DAdaptAdamPreprint", "dadaptation",
                  "D-Adaptation's Adam (DAdaptAdamPreprint, as in sd-scripts), finds its own step size",
                  learning_rate_free=True, one_learning_rate=True, wizard_args=_DECOUPLE),
    OptimizerKind("DAdaptAdamPreprint", "dadaptation.experimental.DAdaptAdamPreprint", "dadaptation",
                  "the same as DAdaptation", learning_rate_free=True, one_learning_rate=True,
                  wizard_args=_DECOUPLE, offered=False),
    OptimizerKind("DAdaptAdam", "dadaptation.DAdaptAdam", "dadaptation",
                  "D-Adaptation's current Adam, finds its own step size",
                  learning_rate_free=True, one_learning_rate=True, wizard_args=_DECOUPLE),
    OptimizerKind("DAdaptLion", "dadaptation.DAdaptLion", "dadaptation",
                  "D-Adaptation's Lion, finds its own step size", learning_rate_free=True, one_learning_rate=True),
    OptimizerKind("DAdaptSGD", "dadaptation.DAdaptSGD", "dadaptation",
                  "D-Adaptation's SGD, finds its own step size", learning_rate_free=True, one_learning_rate=True,
                  takes_betas=False),
    OptimizerKind("DAdaptAdaGrad", "dadaptation.DAdaptAdaGrad", "dadaptation",
                  "D-Adaptation's AdaGrad", learning_rate_free=True, takes_betas=False, offered=False),
    OptimizerKind("DAdaptAdan", "dadaptation.DAdaptAdan", "dadaptation",
                  "D-Adaptation's Adan (three betas)", learning_rate_free=True, takes_betas=False, offered=False),
    OptimizerKind("DAdaptAdanIP", "dadaptation.experimental.DAdaptAdanIP", "dadaptation",
                  "an experimental DAdaptAdan", learning_rate_free=True, takes_betas=False, offered=False),
    OptimizerKind("Prodigy", "prodigyopt.Prodigy", "prodigyopt",
                  "finds its own step size, steadier than D-Adaptation",
                  learning_rate_free=True, one_learning_rate=True, wizard_args=_DECOUPLE),
    OptimizerKind("AdaFactor", "transformers.optimization.Adafactor", "transformers",
                  "little memory, with relative_step (the default) it sets its own learning rate and schedule",
                  takes_betas=False),
    OptimizerKind("AdamWScheduleFree", "schedulefree.AdamWScheduleFree", "schedulefree",
                  "AdamW that averages its weights instead of following a schedule (constant learning rate)",
                  schedule_free=True),
    OptimizerKind("RAdamScheduleFree", "schedulefree.RAdamScheduleFree", "schedulefree",
                  "AdamWScheduleFree with RAdam's built-in warmup", schedule_free=True),
    OptimizerKind("SGDScheduleFree", "schedulefree.SGDScheduleFree", "schedulefree",
                  "SGD that averages its weights instead of following a schedule", schedule_free=True,
                  takes_betas=False, offered=False),
)
OPTIMIZERS: tuple[str, ...] = tuple(OPTIMIZER_KINDS)
OFFERED_OPTIMIZERS: tuple[str, ...] = tuple(name for name, kind in OPTIMIZER_KINDS.items() if kind.offered)
OPTIMIZERS_WITHOUT_BETAS: tuple[str, ...] = tuple(name for name, kind in OPTIMIZER_KINDS.items()
                                                  if not kind.takes_betas)
# Every option a wizard_args sets: switching optimizers takes the old one's out before putting the new one's in.
WIZARD_ARG_NAMES: tuple[str, ...] = tuple(dict.fromkeys(key for kind in OPTIMIZER_KINDS.values()
                                                        for key, _ in kind.wizard_args))
_BY_LOWER_NAME = {name.lower(): kind for name, kind in OPTIMIZER_KINDS.items()}


def optimizer_help() -> str:
    """One line per offered optimizer: what the wizard's question and the settings table say about each."""
    return "; ".join(f"{kind.name}: {kind.help}" for kind in OPTIMIZER_KINDS.values() if kind.offered)


def resolve_optimizer(
    optimizer_type: str, use_8bit_adam: bool = False, use_lion_optimizer: bool = False
) -> OptimizerKind:
    """The optimizer `optimizer_type` names; "" means AdamW, or what sd-scripts' deprecated flags say.

    A name outside the table becomes a kind of its own, as sd-scripts treats it: `module.Class`, or a class of
    torch.optim. Whether it exists is found by `optimizer_class`.
    """
    if not optimizer_type and (use_8bit_adam or use_lion_optimizer):
        if use_8bit_adam and use_lion_optimizer:
            raise UserFacingError("use_8bit_adam and use_lion_optimizer are both set; choose one optimizer with "
                                  "optimizer_type.")
        optimizer_type = "AdamW8bit" if use_8bit_adam else "Lion"
    name = (optimizer_type or "AdamW").strip()
    kind = _BY_LOWER_NAME.get(name.lower())
    if kind is not None:
        return kind
    target = name if "." in name else f"torch.optim.{name}"
    return OptimizerKind(name, target, target.split(".")[0], f"the class {target}")


def optimizer_class(kind: OptimizerKind) -> type:
    """Import the class of `kind`; a missing package or class is one sentence naming what to install or choose."""
    module_name, _, class_name = kind.target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        if kind.name in OPTIMIZER_KINDS:
            raise UserFacingError(
                f"The optimizer {kind.name} needs the Python package '{kind.package}', which is not installed; "
                f"install it (pip install -r requirements.txt) or choose AdamW."
            ) from None
        raise UserFacingError(
            f"The optimizer {kind.name} needs the module '{module_name}', which cannot be imported; install its "
            f"package or choose one of {', '.join(OFFERED_OPTIMIZERS)}."
        ) from None
    found = getattr(module, class_name, None)
    if not isinstance(found, type):
        raise UserFacingError(
            f"The optimizer '{kind.name}' is not supported: {module_name} has no class {class_name}; choose one of "
            f"{', '.join(OFFERED_OPTIMIZERS)} or write a class as module.Class."
        )
    # A settings file names the class; only an optimizer is ever built from it (not, say, subprocess.Popen).
    if not any(base.__name__ == "Optimizer" and base.__module__.startswith("torch.optim") for base in found.__mro__):
        raise UserFacingError(
            f"The optimizer '{kind.name}' names {module_name}.{class_name}, which is not an optimizer (a subclass of "
            f"torch.optim.Optimizer); choose one of {', '.join(OFFERED_OPTIMIZERS)}."
        )
    return found


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
            raise UserFacingError(f"The optimizer option '{shown(piece)}' is not of the form name=value; write it like "
                                  "weight_decay=0.01.")
        try:  # literals only: a call, a name or an attribute (`__import__('os')...`) is refused, never run
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise UserFacingError(
                f"The optimizer option '{shown(piece)}' has a value that is not a number, True/False or a list; "
                "put text values in quotes, like name='value'."
            ) from None
    return options


def complete_options(kind: OptimizerKind, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options sd-scripts hands the class for `kind`: the user's, plus what sd-scripts adds for it.

    SGDNesterov is SGD with nesterov=True and, unless given, momentum 0.9; Adafactor gets relative_step=True unless
    given, and warmup_init needs relative_step. The result is also what ss_optimizer lists (nesterov aside, which
    sd-scripts passes separately).
    """
    options = dict(options)
    if kind.name in ("SGDNesterov", "SGDNesterov8bit"):
        options.setdefault("momentum", 0.9)
    if kind.name == "AdaFactor":
        options.setdefault("relative_step", True)
        if options.get("warmup_init"):
            options["relative_step"] = True
    return options


def follows_lr_schedule(kind: OptimizerKind, options: Mapping[str, Any]) -> bool:
    """Whether the learning-rate scheduler acts: not for schedule-free ones, not for Adafactor's relative step."""
    if kind.schedule_free:
        return False
    return not (kind.name == "AdaFactor" and complete_options(kind, options)["relative_step"])


def check_optimizer_options(kind: OptimizerKind, cls: type, options: Mapping[str, Any]) -> None:
    """Refuse an option the class does not take, by its __init__ signature, without building it."""
    if "lr" in options:
        raise UserFacingError("optimizer_args sets lr; set the learning rate with learning_rate instead.")
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):  # a class implemented in C without a signature: its own call will tell
        return
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return
    unknown = [key for key in options if key not in parameters or key in ("self", "params")]
    if unknown:
        accepted = [name for name, parameter in parameters.items() if name not in ("self", "params", "lr")
                    and parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        raise UserFacingError(
            f"The optimizer {kind.name} has no option {', '.join(unknown)}; remove it from optimizer_args "
            f"({kind.name} takes {', '.join(accepted)})."
        )
