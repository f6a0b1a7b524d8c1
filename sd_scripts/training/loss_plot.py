"""The loss plot written beside the LoRA at the end of a run (`<name>-loss.png`), drawn with Pillow.

Drawn by hand because the trainer's only imaging library is Pillow: matplotlib would add a large dependency (and
its font cache, built on first use) for one line chart. The chart is kept readable at a glance: step numbers on the
x axis, loss values on the y axis, a light line for the loss of each step and a dark line for its running average
(the mean of the last `average_window(n)` steps), a title and a legend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sd_scripts.saving.atomic import write_atomically

PLOT_SIZE = (960, 400)  # width, height in pixels: about the shape of the progress window's curve, twice its detail
MARGINS = (84, 56, 28, 60)  # left (loss labels), top (title, legend), right, bottom (step labels, axis name)
BACKGROUND, FRAME, GRID, TEXT = (255, 255, 255), (150, 150, 150), (228, 228, 228), (50, 50, 50)
RAW_COLOUR, AVERAGE_COLOUR = (150, 190, 228), (11, 79, 156)
MARKED_POINTS = 60  # up to this many steps each loss also gets a dot, so a short run shows its points
TICKS = 6  # about this many labelled values on each axis


def average_window(steps: int) -> int:
    """The running average spans 5% of the run (at least 2 steps): smooth on long runs, still visible on short ones."""
    return max(2, round(steps / 20))


def running_average(values: Sequence[float], window: int) -> list[float]:
    """The mean of each value and the `window - 1` before it (fewer at the start)."""
    averages, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averages.append(total / min(index + 1, window))
    return averages


def nice_ticks(low: float, high: float, count: int = TICKS) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) covering [low, high], about `count` of them."""
    if high <= low:
        high = low + (abs(low) or 1.0) * 0.1
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    spacing = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / spacing) * spacing
    intervals = max(1, math.ceil((high - first) / spacing - 1e-9))
    return [round(first + index * spacing, 12) for index in range(intervals + 1)]


def tick_label(value: float, spacing: float) -> str:
    """A tick value with as many decimals as the tick spacing needs (0.25 -> "0.25", 200 -> "200")."""
    if spacing >= 1:
        return f"{value:.0f}"
    if spacing < 1e-4:
        return f"{value:.2e}"
    return f"{value:.{-math.floor(math.log10(spacing) + 1e-9)}f}"


def draw_loss_plot(steps: Sequence[int], losses: Sequence[float], path: Path, *, title: str) -> None:
    """Write the chart of `losses` over `steps` to the PNG `path` (atomically); an empty run gets a short note."""
    width, height = PLOT_SIZE
    left, top, right, bottom = MARGINS[0], MARGINS[1], width - MARGINS[2], height - MARGINS[3]
    image = Image.new("RGB", PLOT_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, title_font = ImageFont.load_default(size=15), ImageFont.load_default(size=18)
    draw.text((left, 14), title, fill=TEXT, font=title_font)
    draw.rectangle((left, top, right, bottom), outline=FRAME)
    if not steps:
        draw.text(((left + right) / 2, (top + bottom) / 2), "No step was trained.", fill=TEXT, font=font, anchor="mm")
        _save_png(image, path)
        return

    window = average_window(len(losses))
    averages = running_average(losses, window)
    first, last = min(steps), max(steps)
    span = (first - 1, last + 1) if first == last else (first, last)  # one step: drawn in the middle
    x_ticks = [tick for tick in nice_ticks(*span) if tick == int(tick)]
    y_ticks = nice_ticks(min(losses), max(losses))
    x_low, x_high = min(x_ticks[0], first), max(x_ticks[-1], last)
    y_low, y_high = y_ticks[0], y_ticks[-1]

    def x_of(step: float) -> float:
        return left + (step - x_low) / ((x_high - x_low) or 1) * (right - left)

    def y_of(loss: float) -> float:
        return bottom - (loss - y_low) / ((y_high - y_low) or 1) * (bottom - top)

    y_spacing = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    for tick in y_ticks:
        y = y_of(tick)
        draw.line((left, y, right, y), fill=GRID)
        draw.text((left - 8, y), tick_label(tick, y_spacing), fill=TEXT, font=font, anchor="rm")
    for tick in x_ticks:
        x = x_of(tick)
        draw.line((x, top, x, bottom), fill=GRID)
        draw.text((x, bottom + 8), f"{tick:.0f}", fill=TEXT, font=font, anchor="mt")
    draw.rectangle((left, top, right, bottom), outline=FRAME)
    draw.text(((left + right) / 2, height - 10), "step", fill=TEXT, font=font, anchor="mb")
    draw.text((left - 8, top - 8), "loss", fill=TEXT, font=font, anchor="rb")

    raw = [(x_of(step), y_of(loss)) for step, loss in zip(steps, losses)]
    smooth = [(x_of(step), y_of(loss)) for step, loss in zip(steps, averages)]
    draw.line(raw, fill=RAW_COLOUR, width=1)
    if len(raw) <= MARKED_POINTS:
        for x, y in raw:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=RAW_COLOUR)
    draw.line(smooth, fill=AVERAGE_COLOUR, width=2, joint="curve")
    _draw_legend(draw, font, right, (("loss of each step", RAW_COLOUR, 2),
                                     (f"mean of the last {window} steps", AVERAGE_COLOUR, 3)))
    _save_png(image, path)


def _draw_legend(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, right: int,
                 entries: tuple[tuple[str, tuple[int, int, int], int], ...]) -> None:
    """The entries side by side above the chart's top right corner, each after a piece of its line."""
    x, y = right, 24
    for text, colour, line_width in reversed(entries):
        x -= draw.textlength(text, font=font)
        draw.text((x, y), text, fill=TEXT, font=font, anchor="lm")
        draw.line((x - 30, y, x - 6, y), fill=colour, width=line_width)
        x -= 48


def _save_png(image: Image.Image, path: Path) -> None:
    write_atomically(path, lambda temporary: image.save(temporary, format="PNG"))
