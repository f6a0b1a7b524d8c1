"""The loss plot written beside the LoRA at the end of a run (`<name>-loss.png`), drawn with Pillow.

Drawn by hand because the trainer's only imaging library is Pillow: matplotlib would add a large dependency (and
its font cache, built on first use) for one line chart. The chart is kept readable at a glance: step numbers on the
x axis, loss values on the y axis, a light line for the loss of each step and a dark line for its running average
(the mean of the last `average_window(n)` steps), a title and a legend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sd_scripts.saving.atomic import write_atomically

PLOT_SIZE = (960, 400)  # width, height in pixels: about the shape of the progress window's curve, twice its detail
PLOT_TEXT_PIXELS = 15  # the labels' size in the file; a window scales everything by its own text size over it
MARGINS = (84, 56, 28, 60)  # left (loss labels), top (title, legend), right, bottom (step labels, axis name)


@dataclass(frozen=True)
class PlotColours:
    """The chart's colours (RGB triples or "#rrggbb"): the file is drawn on white paper; a window may draw it again in
    its own theme's colours."""

    background: object = (255, 255, 255)
    frame: object = (150, 150, 150)
    grid: object = (228, 228, 228)
    text: object = (50, 50, 50)
    raw: object = (150, 190, 228)  # the loss of each step: light, under...
    average: object = (11, 79, 156)  # ...its running mean, strong


PAPER = PlotColours()
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


def plot_title(output_name: str) -> str:
    return f"Loss of {output_name}"


def draw_loss_plot(steps: Sequence[int], losses: Sequence[float], path: Path, *, title: str) -> None:
    """Write the chart of `losses` over `steps` to the PNG `path` (atomically); an empty run gets a short note."""
    image = render_loss_plot(steps, losses, title=title)
    write_atomically(path, lambda temporary: image.save(temporary, format="PNG"))


def render_loss_plot(steps: Sequence[int], losses: Sequence[float], *, title: str,
                     colours: PlotColours = PAPER, size: tuple[int, int] = PLOT_SIZE,
                     scale: float = 1.0) -> Image.Image:
    """The chart of `losses` over `steps` in `colours`, `size` pixels, with lettering, margins and lines `scale`
    times their size in the file (a window draws it at its own size with letters as large as its text)."""

    def px(value: float) -> int:
        return max(1, round(value * scale))

    width, height = size
    left, top, right, bottom = px(MARGINS[0]), px(MARGINS[1]), width - px(MARGINS[2]), height - px(MARGINS[3])
    image = Image.new("RGB", (width, height), colours.background)
    draw = ImageDraw.Draw(image)
    font, title_font = ImageFont.load_default(size=px(PLOT_TEXT_PIXELS)), ImageFont.load_default(size=px(18))
    draw.text((left, px(14)), title, fill=colours.text, font=title_font)
    draw.rectangle((left, top, right, bottom), outline=colours.frame)
    if not steps:
        draw.text(((left + right) / 2, (top + bottom) / 2), "No step was trained.", fill=colours.text, font=font,
                  anchor="mm")
        return image

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
        draw.line((left, y, right, y), fill=colours.grid)
        draw.text((left - px(8), y), tick_label(tick, y_spacing), fill=colours.text, font=font, anchor="rm")
    for tick in x_ticks:
        x = x_of(tick)
        draw.line((x, top, x, bottom), fill=colours.grid)
        draw.text((x, bottom + px(8)), f"{tick:.0f}", fill=colours.text, font=font, anchor="mt")
    draw.rectangle((left, top, right, bottom), outline=colours.frame)
    draw.text(((left + right) / 2, height - px(10)), "step", fill=colours.text, font=font, anchor="mb")
    draw.text((left - px(8), top - px(8)), "loss", fill=colours.text, font=font, anchor="rb")

    raw = [(x_of(step), y_of(loss)) for step, loss in zip(steps, losses)]
    smooth = [(x_of(step), y_of(loss)) for step, loss in zip(steps, averages)]
    draw.line(raw, fill=colours.raw, width=px(1))
    if len(raw) <= MARKED_POINTS:
        for x, y in raw:
            draw.ellipse((x - px(3), y - px(3), x + px(3), y + px(3)), fill=colours.raw)
    draw.line(smooth, fill=colours.average, width=px(2), joint="curve")
    _draw_legend(draw, font, right, colours.text, px, (("loss of each step", colours.raw, 2),
                                                       (f"mean of the last {window} steps", colours.average, 3)))
    return image


def _draw_legend(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, right: int, text_colour: object,
                 px: Callable[[float], int], entries: tuple[tuple[str, object, int], ...]) -> None:
    """The entries side by side above the chart's top right corner, each after a piece of its line."""
    x, y = right, px(24)
    for text, colour, line_width in reversed(entries):
        x -= draw.textlength(text, font=font)
        draw.text((x, y), text, fill=text_colour, font=font, anchor="lm")
        draw.line((x - px(30), y, x - px(6), y), fill=colour, width=px(line_width))
        x -= px(48)
