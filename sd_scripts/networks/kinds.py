"""Which network types exist and which options each one takes: the one table the trainer, the wizard's questions,
its summary and every validation read, so that no part can offer a combination another part refuses.

A network type is what a user chooses ("LoHa"); sd-scripts names it by `network_module` and, for LyCORIS, the
`algo=` network argument. Options are the `network_args` keys as sd-scripts and LyCORIS spell them
(`conv_dim=8`, `dora_wd=True`, ...). `parse_network_args` turns a list of "key=value" strings into typed values for
one type, refusing with one sentence any key that type does not take.

This module is free of heavy imports: the wizard reads it on the way to the first popup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sd_scripts.errors import UserFacingError
from sd_scripts.untrusted import shown

KOHYA_LORA_MODULE = "networks.lora"
KOHYA_DYLORA_MODULE = "networks.dylora"
LYCORIS_MODULE = "lycoris.kohya"
# sd-scripts run from the original tool's checkout named its modules this way; they are the same networks.
MODULE_ALIASES = {"sd_scripts.networks.lora": KOHYA_LORA_MODULE, "sd_scripts.networks.dylora": KOHYA_DYLORA_MODULE}



@dataclass(frozen=True)
class BlockCounts:
    """How many values each per-block option of kohya's LoRA takes for a model family (sd-scripts' numbering).

    SD1/SD2: 12 down, 1 middle, 12 up = 25. SDXL: 9 input, 3 middle, 9 output, and in the per-block dims and alphas
    a first (base: time and size embeddings) and last (out) value around them = 23; those two blocks never get a LoRA.
    """

    per_side: int  # values of down_lr_weight and of up_lr_weight
    middle: int  # values of mid_lr_weight
    edges: int  # SDXL's base and out blocks, counted only in the 23 per-block dims/alphas

    @property
    def total(self) -> int:
        """Values of block_dims, block_alphas, conv_block_dims, conv_block_alphas."""
        return 2 * self.per_side + self.middle + self.edges

    @property
    def layout(self) -> str:
        """The order of the `total` values, for sentences."""
        if self.edges:
            return f"base, {self.per_side} input, {self.middle} middle, {self.per_side} output, out"
        return f"{self.per_side} down, the middle, {self.per_side} up"


SD_BLOCK_COUNTS = BlockCounts(per_side=12, middle=1, edges=0)
SDXL_BLOCK_COUNTS = BlockCounts(per_side=9, middle=3, edges=2)
BLOCKS_PER_SIDE = SD_BLOCK_COUNTS.per_side  # SD1/SD2 U-Net: 12 down blocks, 1 middle, 12 up
NUM_BLOCKS = SD_BLOCK_COUNTS.total


def block_counts(is_sdxl: bool) -> BlockCounts:
    """The per-block value counts for SDXL or for SD1/SD2 (what the wizard's questions ask for)."""
    return SDXL_BLOCK_COUNTS if is_sdxl else SD_BLOCK_COUNTS

BLOCK_WEIGHT_PRESETS = ("sine", "cosine", "linear", "reverse_linear", "zeros")
LYCORIS_PRESETS = ("full", "full-lin", "attn-mlp", "attn-only", "unet-only", "unet-transformer-only",
                   "unet-convblock-only", "ia3")


def _truth(text: str) -> bool:
    """LyCORIS' str_bool: "true"/"1"/"yes" (any case) are true, "false"/"0"/"no"/"none"/"" false."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "no", "n", "off", "none", ""):
        return False
    raise ValueError(text)


def _block_list(lengths: tuple[int, ...], *, whole: bool) -> Callable[[str], tuple[float, ...] | tuple[int, ...]]:
    """Comma-separated values, as many as one of `lengths` (one per family: which one fits is checked in blocks.py,
    where the model's family is known)."""
    def parse(text: str) -> tuple[float, ...] | tuple[int, ...]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        if len(values) not in lengths:
            raise ValueError(text)
        return tuple(int(value) for value in values) if whole else tuple(float(value) for value in values)
    return parse


_SIDE_LENGTHS = (SD_BLOCK_COUNTS.per_side, SDXL_BLOCK_COUNTS.per_side)
_TOTAL_LENGTHS = (SD_BLOCK_COUNTS.total, SDXL_BLOCK_COUNTS.total)


def _block_weights(text: str) -> str | tuple[float, ...]:
    """12 weights (SDXL: 9), or a preset word with an optional "+base" (sd-scripts: "cosine+.25")."""
    word = text.strip().split("+")[0].strip()
    if word in BLOCK_WEIGHT_PRESETS:
        return text.strip()
    weights = _block_list(_SIDE_LENGTHS, whole=False)(text)
    if any(weight < 0 for weight in weights):
        raise ValueError(text)
    return weights


def _mid_weights(text: str) -> float | tuple[float, ...]:
    """One weight for SD1/SD2's middle block, or three for SDXL's (middle_block 0, 1, 2)."""
    weights = _block_list((SD_BLOCK_COUNTS.middle, SDXL_BLOCK_COUNTS.middle), whole=False)(text)
    if any(weight < 0 for weight in weights):
        raise ValueError(text)
    return weights[0] if len(weights) == 1 else weights


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.strip() not in choices:
            raise ValueError(text)
        return text.strip()
    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(text)
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(text)
    return value


def _factor(text: str) -> int:
    value = int(text)
    if value == 0 or value < -1:
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class NetworkOption:
    """One `network_args` key: how its text is read and what a valid value looks like (said in the error)."""

    name: str
    parse: Callable[[str], object]
    expects: str


OPTIONS: dict[str, NetworkOption] = {option.name: option for option in (
    NetworkOption("conv_dim", _positive_int, "a whole number of 1 or more, e.g. conv_dim=8"),
    NetworkOption("conv_alpha", _non_negative, "a number of 0 or more, e.g. conv_alpha=4"),
    NetworkOption("unit", _positive_int, "a whole number of 1 or more that divides the dim, e.g. unit=4"),
    NetworkOption("down_lr_weight", _block_weights,
                  f"12 (SDXL: 9) comma-separated weights of 0 or more, or one of {', '.join(BLOCK_WEIGHT_PRESETS)}"),
    NetworkOption("mid_lr_weight", _mid_weights,
                  "a number of 0 or more (SDXL: 3 comma-separated numbers), e.g. mid_lr_weight=1"),
    NetworkOption("up_lr_weight", _block_weights,
                  f"12 (SDXL: 9) comma-separated weights of 0 or more, or one of {', '.join(BLOCK_WEIGHT_PRESETS)}"),
    NetworkOption("block_lr_zero_threshold", _non_negative, "a number of 0 or more, e.g. 0.1"),
    NetworkOption("block_dims", _block_list(_TOTAL_LENGTHS, whole=True), "25 (SDXL: 23) comma-separated whole numbers"),
    NetworkOption("block_alphas", _block_list(_TOTAL_LENGTHS, whole=False), "25 (SDXL: 23) comma-separated numbers"),
    NetworkOption("conv_block_dims", _block_list(_TOTAL_LENGTHS, whole=True),
                  "25 (SDXL: 23) comma-separated whole numbers"),
    NetworkOption("conv_block_alphas", _block_list(_TOTAL_LENGTHS, whole=False),
                  "25 (SDXL: 23) comma-separated numbers"),
    NetworkOption("algo", _choice(("lora", "locon", "loha", "lokr", "ia3")), "one of lora, locon, loha, lokr, ia3"),
    NetworkOption("preset", _choice(LYCORIS_PRESETS), f"one of {', '.join(LYCORIS_PRESETS)}"),
    NetworkOption("use_tucker", _truth, "True or False"),
    NetworkOption("rank_dropout", _fraction, "a number from 0 to below 1, e.g. rank_dropout=0.1"),
    NetworkOption("module_dropout", _fraction, "a number from 0 to below 1, e.g. module_dropout=0.1"),
    NetworkOption("dora_wd", _truth, "True or False"),
    NetworkOption("factor", _factor, "-1 (the most balanced) or a whole number of 1 or more, e.g. factor=8"),
    NetworkOption("full_matrix", _truth, "True or False"),
    NetworkOption("decompose_both", _truth, "True or False"),
)}
# LyCORIS' older spellings of its CP switch (what the original tool wrote); read as use_tucker.
OPTION_ALIASES = {"use_conv_cp": "use_tucker", "use_cp": "use_tucker"}
NEGATED_ALIASES = {"disable_conv_cp": "use_tucker"}

BLOCK_WEIGHT_OPTIONS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold")
BLOCK_DIM_OPTIONS = ("block_dims", "block_alphas")
CONV_BLOCK_DIM_OPTIONS = ("conv_block_dims", "conv_block_alphas")
# LyCORIS' plain `dropout` acts only in its bypass mode, which sd-scripts never uses (lycoris-lora 4.1.3): not offered.
LYCORIS_COMMON = ("algo", "preset", "rank_dropout", "module_dropout")


@dataclass(frozen=True)
class NetworkType:
    """A network a user can train: its wizard name, how sd-scripts names it, and the options it takes."""

    name: str
    module: str
    algo: str | None  # LyCORIS' algo=, None for kohya's own networks
    options: tuple[str, ...]
    required: tuple[str, ...] = ()
    help: str = ""

    def takes(self, option: str) -> bool:
        return option in self.options


NETWORK_TYPES: dict[str, NetworkType] = {kind.name: kind for kind in (
    NetworkType("LoRA", KOHYA_LORA_MODULE, None,
                BLOCK_WEIGHT_OPTIONS + BLOCK_DIM_OPTIONS,
                help="kohya's LoRA on the attention and MLP layers: the most compatible"),
    NetworkType("LoCon", KOHYA_LORA_MODULE, None,
                ("conv_dim", "conv_alpha") + BLOCK_WEIGHT_OPTIONS + BLOCK_DIM_OPTIONS + CONV_BLOCK_DIM_OPTIONS,
                required=("conv_dim",),
                help="kohya's LoRA plus the U-Net's 3x3 convolutions (LoRA-C3Lier)"),
    NetworkType("LyCORIS LoCon", LYCORIS_MODULE, "locon",
                LYCORIS_COMMON + ("conv_dim", "conv_alpha", "use_tucker", "dora_wd"),
                help="LyCORIS' LoRA/LoCon, which can add DoRA weight decomposition"),
    NetworkType("LoHa", LYCORIS_MODULE, "loha",
                LYCORIS_COMMON + ("conv_dim", "conv_alpha", "use_tucker", "dora_wd"),
                help="LyCORIS' Hadamard-product network: more expressive for the same file size"),
    NetworkType("LoKr", LYCORIS_MODULE, "lokr",
                LYCORIS_COMMON + ("conv_dim", "conv_alpha", "use_tucker", "dora_wd", "factor", "full_matrix",
                                  "decompose_both"),
                help="LyCORIS' Kronecker-product network: very small files"),
    NetworkType("IA3", LYCORIS_MODULE, "ia3", ("algo", "preset", "module_dropout"),
                help="LyCORIS' (IA)3: learns a scale per channel, tiny and fast; needs a high learning rate"),
    NetworkType("DyLoRA", KOHYA_DYLORA_MODULE, None, ("unit", "conv_dim", "conv_alpha"),
                help="kohya's DyLoRA: trains every rank up to dim at once, in steps of unit"),
)}
# LyCORIS spells LoCon "lora" or "locon": both are the same module.
_TYPE_OF_ALGO = {"lora": "LyCORIS LoCon", "locon": "LyCORIS LoCon", "loha": "LoHa", "lokr": "LoKr", "ia3": "IA3"}


def network_type_of(network_module: str, network_args: Iterable[str]) -> NetworkType:
    """The network type of sd-scripts' `network_module` and `network_args`, or one sentence saying it is not one."""
    module = MODULE_ALIASES.get(network_module, network_module)
    raw = _split(network_args)
    if module == LYCORIS_MODULE:
        algo = raw.get("algo", "lora").strip().lower()
        if algo not in _TYPE_OF_ALGO:
            raise UserFacingError(
                f"The LyCORIS algorithm '{algo}' is not one this trainer offers; use lora, locon, loha, lokr or ia3."
            )
        return NETWORK_TYPES[_TYPE_OF_ALGO[algo]]
    if module == KOHYA_DYLORA_MODULE:
        return NETWORK_TYPES["DyLoRA"]
    if module == KOHYA_LORA_MODULE:
        return NETWORK_TYPES["LoCon" if "conv_dim" in raw else "LoRA"]
    raise UserFacingError(
        f"The network module '{network_module}' is not one this trainer has; use networks.lora, networks.dylora "
        "or lycoris.kohya."
    )


def parse_network_args(network_module: str, network_args: Iterable[str]) -> dict[str, object]:
    """The typed options of `network_args` for this module, each checked against the type's table entry."""
    kind = network_type_of(network_module, network_args)
    options: dict[str, object] = {}
    for key, text in _split(network_args).items():
        name = OPTION_ALIASES.get(key) or NEGATED_ALIASES.get(key) or key
        if name not in OPTIONS or not kind.takes(name):
            takes = ", ".join(kind.options) or "no options"
            raise UserFacingError(
                f"The network option '{shown(key)}' does not apply to {kind.name}; remove it ({kind.name} takes {takes})."
            )
        option = OPTIONS[name]
        try:
            value = option.parse(text)
        except ValueError:
            raise UserFacingError(f"The network option {shown(key)}={shown(text)} is not valid; {key} needs {option.expects}.") \
                from None
        options[name] = (not value) if key in NEGATED_ALIASES else value
    if kind.algo is not None:
        options["algo"] = kind.algo  # "lora" and "locon" name the same LyCORIS module
    for name in kind.required:
        if name not in options:
            raise UserFacingError(f"{kind.name} needs the network option {name}; add {OPTIONS[name].expects}.")
    return options


def _split(network_args: Iterable[str]) -> dict[str, str]:
    """{"key": "value"} of "key=value" strings; one sentence for an item without "="."""
    items: dict[str, str] = {}
    for item in network_args:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise UserFacingError(f"The network option '{shown(item)}' is not of the form key=value; write it e.g. as conv_dim=8.")
        items[key.strip()] = value.strip()
    return items
