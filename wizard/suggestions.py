"""Better values the popups would have suggested, for settings that came from a file.

An imported file trains as it is (its values are kept, as sd-scripts would train them); where the popups would have
put in another value, the summary says so beside the row, and the user may Edit it. Each suggestion is a check on the
config that returns one sentence, or None.
"""

from __future__ import annotations

from typing import Callable

from wizard.config import TrainConfig
from wizard.network_options import IA3_PRESET

# Optimizers that find their own step size: the learning rate only scales it, and the popups set it to 1.0.
LEARNING_RATE_FREE = ("DAdaptation", "DAdaptAdam", "DAdaptLion", "DAdaptSGD", "Prodigy")
LEARNING_RATE_FREE_RATE = 1.0
SMALLEST_SENSIBLE_FREE_RATE = 0.1  # below this a learning-rate-free optimizer barely moves

Suggestion = Callable[[TrainConfig], "str | None"]


def _free_optimizer_rate(config: TrainConfig) -> str | None:
    optimizer = config.get("optimizer_type")
    rate = config.get("learning_rate")
    if optimizer in LEARNING_RATE_FREE and rate < SMALLEST_SENSIBLE_FREE_RATE:
        return f"{optimizer} finds its own step size; the popups suggest learning rate {LEARNING_RATE_FREE_RATE}."
    return None


def _decouple(config: TrainConfig) -> str | None:
    """DAdaptAdam's own default is decouple=False (DAdaptation gets True from the translation, Prodigy by default)."""
    if config.get("optimizer_type") == "DAdaptAdam" \
            and str(config.get("optimizer_args").get("decouple", "")).lower() != "true":
        return "the popups suggest decouple=True (AdamW-style weight decay) for this optimizer."
    return None


def _ia3_preset(config: TrainConfig) -> str | None:
    if config.get("network_type") == "IA3" and config.get("lycoris_preset") != IA3_PRESET:
        return f"the popups suggest LyCORIS' {IA3_PRESET} preset for IA3."
    return None


# field -> the suggestions shown on its row when the field's value was loaded from a file.
SUGGESTIONS: dict[str, tuple[Suggestion, ...]] = {
    "learning_rate": (_free_optimizer_rate,),
    "optimizer_args": (_decouple,),
    "lycoris_preset": (_ia3_preset,),
}


def suggestions_for(config: TrainConfig, name: str) -> list[str]:
    """The popups' suggestions for field `name` when its value came from a file; [] for asked values and defaults."""
    if config.origin(name) != "loaded":
        return []
    return [text for check in SUGGESTIONS.get(name, ()) if (text := check(config)) is not None]
