"""The LoRA itself: block weights, dim and alpha (globally or per block), the network type and its options."""

from __future__ import annotations

from typing import Callable

from sd_scripts.networks.kinds import LYCORIS_PRESETS, NETWORK_TYPES as NETWORK_TYPE_TABLE
from wizard.config import FIELD_BY_NAME, NETWORK_TYPES, TrainConfig
from wizard.network_options import IA3_PRESET, takes
from wizard.question import Question

from questions.build import comma_joined, field_help, gate, is_set
from questions.checks import block_values, block_weights, blocks_in_words, blocks_of, divides_dim

BLOCK_FIELDS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_dims", "block_alphas", "conv_block_dims",
                "conv_block_alphas")
TYPES_WITH_BLOCKS = tuple(name for name, kind in NETWORK_TYPE_TABLE.items() if kind.takes("down_lr_weight"))
DROPOUT_FIELDS = ("rank_dropout", "module_dropout")
TRAINED_PARTS = ("both", "unet only", "text encoder only")
CONV_DIM_WHEN_UNSET = 32  # the popups' default for LoCon, LoHa and LoKr


def blocks_on(config: TrainConfig) -> bool:
    return any(is_set(name)(config) for name in BLOCK_FIELDS)


def _type_is(*types: str):
    return lambda config: config.get("network_type") in types


def _takes(field: str):
    """A `when`: the chosen network type takes this field's option (sd_scripts.networks.kinds says which)."""
    return lambda config: takes(config, field)


def _asks_conv_dim(config: TrainConfig) -> bool:
    """DyLoRA's conv dim is its dim, set by its own yes/no; every other type that takes a conv dim asks for it."""
    return takes(config, "conv_dim") and config.get("network_type") != "DyLoRA"


def _uses_conv(config: TrainConfig) -> bool:
    return _asks_conv_dim(config) or (takes(config, "conv_dim") and config.get("conv_dim") is not None)


def _dylora_trains_convs(config: TrainConfig) -> bool:
    """Yes only when a conv dim was chosen or loaded: the conv dim's default (32, for LoCon) means no here."""
    return config.get("conv_dim") is not None and config.origin("conv_dim") != "default"


def _store_dylora_conv(answer: bool, config: TrainConfig) -> None:
    config.set("conv_dim", config.get("net_dim") if answer else None)


def _suggested_preset(config: TrainConfig) -> str:
    """IA3 suggests LyCORIS' ia3 preset until a preset is chosen; the others keep theirs (full by default)."""
    if config.get("network_type") == "IA3" and config.origin("lycoris_preset") == "default":
        return IA3_PRESET
    return config.get("lycoris_preset")


def _store_dim(answer: int, config: TrainConfig) -> None:
    config.set("net_dim", answer)
    if config.origin("alpha") == "default":
        config.set("alpha", answer / 2, origin="default")  # alpha follows the dim until the user picks one


def _store_trained_parts(answer: str, config: TrainConfig) -> None:
    config.set("unet_only", answer == TRAINED_PARTS[1])
    config.set("text_only", answer == TRAINED_PARTS[2])


def _trained_parts(config: TrainConfig) -> str:
    if config.get("unet_only"):
        return TRAINED_PARTS[1]
    if config.get("text_only"):
        return TRAINED_PARTS[2]
    return TRAINED_PARTS[0]


def _per_block(config: TrainConfig, value: object) -> str:
    return ",".join([str(value)] * blocks_of(config).total)


def _ones(config: TrainConfig) -> str:
    return ",".join(["1"] * blocks_of(config).per_side)


def per_block_values(field: str, what: str, *, whole: bool) -> Question:
    """The per-block values of `field` (SD: 12 down, middle, 12 up; SDXL: 23), asked once its gate said yes."""
    return Question(
        id=field, kind="text", field=field, store=comma_joined(field), when=is_set(field),
        validate=block_values(whole=whole),
        text=f"{what} of the 25 blocks (12 down, middle, 12 up)?",
        text_for=lambda config: f"{what} of the {blocks_in_words(config)}?",
        help=field_help(field),
    )


def _side_weights_text(side: str, sdxl_side: str) -> Callable[[TrainConfig], str]:
    def text(config: TrainConfig) -> str:
        counts = blocks_of(config)
        name = sdxl_side if counts.edges else side
        return f"Weights of the {counts.per_side} {name} blocks (0 to 1 each), or a preset word?"
    return text


QUESTIONS: list[Question] = [
    gate(
        "block_weights", "Train with block weights? (choose no if you are new to this)",
        "Block weights give each U-Net block its own learning-rate multiplier (and optionally its own dim and "
        "alpha), to steer what the LoRA learns, e.g. less of the composition. Only LoRA and LoCon support them. "
        "Default no.",
        fields=BLOCK_FIELDS,
        start_with={"down_lr_weight": _ones, "mid_lr_weight": lambda config: 1.0, "up_lr_weight": _ones},
    ),
    Question(
        id="down_lr_weight", kind="text", field="down_lr_weight", store=comma_joined("down_lr_weight"),
        when=blocks_on,
        validate=block_weights,
        text="Weights of the 12 down blocks (0 to 1 each), or a preset word?",
        text_for=_side_weights_text("down", "input"),
        help=field_help("down_lr_weight"),
    ),
    Question(
        id="mid_lr_weight", kind="float", field="mid_lr_weight",
        when=blocks_on,
        text="Weight of the middle block (0 to 1)?",
        text_for=lambda config: ("Weight of the 3 middle blocks (0 to 1; one weight for the three)?"
                                 if blocks_of(config).edges else "Weight of the middle block (0 to 1)?"),
        help=field_help("mid_lr_weight"),
    ),
    Question(
        id="up_lr_weight", kind="text", field="up_lr_weight", store=comma_joined("up_lr_weight"),
        when=blocks_on,
        validate=block_weights,
        text="Weights of the 12 up blocks (0 to 1 each), or a preset word?",
        text_for=_side_weights_text("up", "output"),
        help=field_help("up_lr_weight"),
    ),
    Question(
        id="net_dim", kind="int", field="net_dim", store=_store_dim,
        text="Network dim (rank)? With dims per block, this is the default for the rest.",
        help=field_help("net_dim"),
    ),
    gate(
        "use_block_dims", "Set the dim of each block separately?", field_help("block_dims"),
        fields=("block_dims",), when=blocks_on,
        start_with={"block_dims": lambda config: _per_block(config, config.get("net_dim"))},
    ),
    per_block_values("block_dims", "Dims", whole=True),
    Question(
        id="alpha", kind="float", field="alpha",
        text="Network alpha? (the default is half the dim)",
        help=field_help("alpha"),
    ),
    gate(
        "use_block_alphas", "Set the alpha of each block separately?", field_help("block_alphas"),
        fields=("block_alphas",), when=blocks_on,
        start_with={"block_alphas": lambda config: _per_block(config, f"{config.get('alpha'):g}")},
    ),
    per_block_values("block_alphas", "Alphas", whole=False),
    Question(
        id="network_type_with_blocks", kind="choice", field="network_type", choices=TYPES_WITH_BLOCKS,
        when=blocks_on,
        text="Which type of network? (with block weights: LoRA or LoCon)",
        help=field_help("network_type"),
    ),
    Question(
        id="network_type", kind="choice", field="network_type", choices=NETWORK_TYPES,
        when=lambda config: not blocks_on(config),
        text="Which type of network?",
        help=field_help("network_type"),
    ),
    Question(
        id="dylora_conv", kind="yesno", field=None, fields=("conv_dim",), when=_type_is("DyLoRA"),
        current=_dylora_trains_convs, store=_store_dylora_conv,
        text="Also train the convolution layers with DyLoRA?",
        help="DyLoRA can train the U-Net's 3x3 convolutions too; their dim is then the same as the network dim. "
             "Default no.",
    ),
    Question(
        id="unit", kind="int", field="unit", when=_takes("unit"), validate=divides_dim,
        text="DyLoRA unit size? (the dim must be divisible by it)",
        help=field_help("unit"),
    ),
    gate(
        "use_conv_block_dims", "Set the conv dim of each block separately?", field_help("conv_block_dims"),
        fields=("conv_block_dims",),
        when=lambda config: blocks_on(config) and takes(config, "conv_block_dims"),
        start_with={"conv_block_dims": lambda config: _per_block(config, config.get("conv_dim") or CONV_DIM_WHEN_UNSET)},
    ),
    per_block_values("conv_block_dims", "Conv dims", whole=True),
    Question(
        id="conv_dim", kind="int", field="conv_dim", when=_asks_conv_dim,
        current=lambda config: config.get("conv_dim") or CONV_DIM_WHEN_UNSET,
        text="Conv dim (rank of the convolution layers)?",
        help=field_help("conv_dim"),
    ),
    gate(
        "use_conv_block_alphas", "Set the conv alpha of each block separately?", field_help("conv_block_alphas"),
        fields=("conv_block_alphas",),
        when=lambda config: blocks_on(config) and is_set("conv_block_dims")(config),  # sd-scripts needs both
        start_with={"conv_block_alphas": lambda config: _per_block(
            config, config.get("conv_alpha") or config.get("conv_dim") or CONV_DIM_WHEN_UNSET)},
    ),
    per_block_values("conv_block_alphas", "Conv alphas", whole=False),
    Question(
        id="conv_alpha", kind="float", field="conv_alpha", when=_uses_conv,
        current=lambda config: config.get("conv_alpha") or float(config.get("conv_dim") or CONV_DIM_WHEN_UNSET),
        text="Conv alpha? (the default is the conv dim: no scaling)",
        help=field_help("conv_alpha"),
    ),
    Question(
        id="use_conv_cp", kind="yesno", field="use_conv_cp", when=_takes("use_conv_cp"),
        text="Use CP decomposition for the convolution layers?",
        help=field_help("use_conv_cp"),
    ),
    Question(
        id="lokr_factor", kind="int", field="lokr_factor", when=_takes("lokr_factor"),
        current=lambda config: config.get("lokr_factor") or -1,
        text="LoKr factor? (-1: the most balanced split)",
        help=field_help("lokr_factor"),
    ),
    Question(
        id="lokr_full_matrix", kind="yesno", field="lokr_full_matrix", when=_takes("lokr_full_matrix"),
        text="Train LoKr's larger factor as a full matrix?",
        help=field_help("lokr_full_matrix"),
    ),
    Question(
        id="dora_wd", kind="yesno", field="dora_wd", when=_takes("dora_wd"),
        text="Use DoRA (weight decomposition)?",
        help=field_help("dora_wd"),
    ),
    Question(
        id="lycoris_preset", kind="choice", field="lycoris_preset", choices=LYCORIS_PRESETS,
        when=_takes("lycoris_preset"), current=_suggested_preset,
        text="Which layers should the LyCORIS network train (its preset)?",
        help=field_help("lycoris_preset"),
    ),
    gate(
        "use_network_dropout", "Use dropout in the network? (choose no if you are new to this)",
        "Dropout switches off random parts of the network in each training step, which can fight overfitting on "
        "small datasets. Default no.",
        fields=DROPOUT_FIELDS, when=_takes("module_dropout"),
        start_with={name: (lambda config: 0.1) for name in DROPOUT_FIELDS},
    ),
    *[Question(
        id=field, kind="float", field=field,
        when=lambda config, field=field: takes(config, field) and any(is_set(name)(config) for name in DROPOUT_FIELDS),
        text=f"{FIELD_BY_NAME[field].label} (0 to below 1; 0 for none)?",
        help=field_help(field),
    ) for field in DROPOUT_FIELDS],
    Question(
        id="trained_parts", kind="choice", field=None, fields=("unet_only", "text_only"), choices=TRAINED_PARTS,
        current=_trained_parts, store=_store_trained_parts,
        text="Train both parts of the model, or only one?",
        help="Both (default) teaches the image model (U-Net) and the text encoder; U-Net only leaves prompts "
             "untouched, which is gentler for styles; text encoder only is rarely useful.",
    ),
]
