"""Caption augmentation, in the order and with the random draws of sd-scripts' `BaseDataset.process_caption`."""

from __future__ import annotations

import math
import random

from sd_scripts.dataset.settings import SubsetOptions


def process_caption(
    caption: str, options: SubsetOptions, *, epoch: int, step: int, max_train_steps: int, rng: random.Random
) -> str:
    """Drop the whole caption, or split it into tags and keep, warm up, shuffle and drop them; `epoch` is 1-based."""
    dropped = options.caption_dropout_rate > 0 and rng.random() < options.caption_dropout_rate
    every_n = options.caption_dropout_every_n_epochs
    if dropped or (every_n > 0 and epoch % every_n == 0):
        return ""
    warmup_steps = token_warmup_steps(options.token_warmup_step, max_train_steps)
    if not (options.shuffle_caption or warmup_steps > 0 or options.caption_tag_dropout_rate > 0):
        return caption

    tags = [tag.strip() for tag in caption.strip().split(",")]
    fixed, flexible = tags[: options.keep_tokens], tags[options.keep_tokens :]
    if warmup_steps and step < warmup_steps:
        kept = math.floor(step * ((len(flexible) - options.token_warmup_min) / warmup_steps)) + options.token_warmup_min
        flexible = flexible[:kept]
    if options.shuffle_caption:
        rng.shuffle(flexible)
    if options.caption_tag_dropout_rate > 0:
        flexible = [tag for tag in flexible if rng.random() >= options.caption_tag_dropout_rate]
    return ", ".join(fixed + flexible)


def token_warmup_steps(token_warmup_step: float, max_train_steps: int) -> int:
    """sd-scripts reads a token_warmup_step below 1 as a fraction of the training steps."""
    if token_warmup_step < 1:
        return math.floor(token_warmup_step * max_train_steps)
    return int(token_warmup_step)
