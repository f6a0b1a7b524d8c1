"""The wizard's network settings and the trainer's network options, both ways, read from the trainer's one table.

`sd_scripts.networks.kinds` says which network types exist and which `network_args` each takes; this module only
says which wizard field holds each option. The questions ask a field when the chosen type takes its option
(`takes`), the summary marks the others as unused, and `network_settings` writes exactly the options the type
takes, so the popups can never produce a combination the trainer refuses.
"""

from __future__ import annotations

from typing import Any

from sd_scripts.errors import UserFacingError
from sd_scripts.networks.kinds import (NEGATED_ALIASES, NETWORK_TYPES, OPTION_ALIASES, block_counts, network_type_of,
                                      parse_network_args)
from wizard.config import FIELD_BY_NAME, ConfigError, TrainConfig, trains_sdxl

# network_args name -> the wizard field that holds it. `algo` comes from the type itself.
FIELD_OF_OPTION = {
    "conv_dim": "conv_dim",
    "conv_alpha": "conv_alpha",
    "unit": "unit",
    "use_tucker": "use_conv_cp",
    "dora_wd": "dora_wd",
    "preset": "lycoris_preset",
    "rank_dropout": "rank_dropout",
    "module_dropout": "module_dropout",
    "factor": "lokr_factor",
    "full_matrix": "lokr_full_matrix",
    "down_lr_weight": "down_lr_weight",
    "mid_lr_weight": "mid_lr_weight",
    "up_lr_weight": "up_lr_weight",
    "block_dims": "block_dims",
    "block_alphas": "block_alphas",
    "conv_block_dims": "conv_block_dims",
    "conv_block_alphas": "conv_block_alphas",
}
OPTION_OF_FIELD = {field: option for option, field in FIELD_OF_OPTION.items()}
IA3_PRESET = "ia3"  # LyCORIS recommends its ia3 preset for IA3; the popups suggest it
LYCORIS_DEFAULT_PRESET = "full"  # what LyCORIS uses without a preset= argument: not written


def takes(config: TrainConfig, field: str) -> bool:
    """Whether the config's network type uses this network field (the questions' `when`)."""
    return NETWORK_TYPES[config.get("network_type")].takes(OPTION_OF_FIELD[field])


def unused_fields(config: TrainConfig) -> set[str]:
    """The network fields the chosen type does not use: the summary shows them as such."""
    return {field for field in OPTION_OF_FIELD if not takes(config, field)}


def network_settings(config: TrainConfig) -> tuple[str, list[str]]:
    """sd-scripts' network_module and the "key=value" network_args for the config's network type.

    Only the options the type takes are written: a value left from an answer to another type, or set by a
    loaded file for another type, is not used, and the summary says so ("not used by LoRA"). The importers of
    foreign files warn about such values when they load them.
    """
    kind = NETWORK_TYPES[config.get("network_type")]
    items = [f"algo={kind.algo}"] if kind.algo else []
    for option, field in FIELD_OF_OPTION.items():
        value = config.get(field)
        if not kind.takes(option):
            continue
        if option == "conv_alpha" and value is None and config.get("conv_dim") is not None:
            value = float(config.get("conv_dim"))  # no scaling, as the seed's popups defaulted it
        if value is None and option in kind.required:
            raise ConfigError(f"{kind.name} needs {FIELD_BY_NAME[field].label} ({field}); set it, or choose another "
                              "network type.")
        if value is None or value is False or (option == "preset" and value == LYCORIS_DEFAULT_PRESET):
            continue
        if option == "mid_lr_weight" and trains_sdxl(config):  # the wizard's one weight for SDXL's 3 middle blocks
            value = (value,) * block_counts(True).middle
        items.append(f"{option}={_text(value)}")
    try:
        parse_network_args(kind.module, items)
    except UserFacingError as error:
        raise ConfigError(str(error)) from None
    return kind.module, items


def read_network(config: TrainConfig, module: str, items: list[str]) -> None:
    """network_module + network_args of a trainer configuration -> network_type and its fields, marked loaded.

    Arguments the type does not take are left out, as sd-scripts ignores them; the callers' round-trip
    comparison names them to the user.
    """
    fields, _ = network_fields(module, items)
    for field, value in fields.items():
        config.set(field, value, origin="loaded")


def network_fields(module: str, items: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The wizard fields (network_type first) that sd-scripts' network_module + network_args describe, and the
    names of the arguments that the type does not take or the wizard has no field for.

    Without conv args a network trains no convolutions, which the wizard says with an empty conv_dim; conv_dim
    without conv_alpha means conv_alpha 1, as in sd-scripts and LyCORIS.
    """
    try:
        kind = network_type_of(module, items)
        known, ignored = [], []
        for item in items:
            key = item.partition("=")[0].strip()
            name = OPTION_ALIASES.get(key) or NEGATED_ALIASES.get(key) or key
            if kind.takes(name) and (name in FIELD_OF_OPTION or name == "algo"):
                known.append(item)
            else:
                ignored.append(key)
        options = parse_network_args(module, known)
    except UserFacingError as error:
        raise ConfigError(str(error)) from None
    fields: dict[str, Any] = {"network_type": kind.name}
    if kind.takes("conv_dim"):
        fields["conv_dim"] = None
    if "conv_dim" in options and "conv_alpha" not in options:
        options["conv_alpha"] = 1.0
    for option, value in options.items():
        if option in FIELD_OF_OPTION:
            fields[FIELD_OF_OPTION[option]] = _field_value(option, value)
    return fields, ignored


def _field_value(option: str, value: Any) -> Any:
    """A parsed option as its wizard field holds it: lists of block values as comma-joined text; SDXL's 3 middle
    block weights as the one weight the wizard holds, when they are equal."""
    if option == "mid_lr_weight" and isinstance(value, tuple):
        if len(set(value)) != 1:
            raise ConfigError(f"The middle block weights {_text(value)} differ; the wizard holds one weight for "
                              "SDXL's three middle blocks, so give them one value.")
        return value[0]
    if isinstance(value, tuple):
        return ",".join(_text(item) for item in value)
    return value


def _text(value: Any) -> str:
    """16.0 -> "16", 0.5 -> "0.5", (1, 2) -> "1,2": network_args read like the ones sd-scripts users write."""
    if isinstance(value, tuple):
        return ",".join(_text(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
