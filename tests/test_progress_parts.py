"""The progress window's pure parts: the curve's downsampling, the figures' formats, sample scaling and prompts."""

from __future__ import annotations

from PIL import Image

from sd_scripts.events import Step
from wizard.progress_window import _fraction_of_epoch, downsample, fit_into, format_duration, format_speed, prompt_text


def test_a_short_history_is_drawn_point_by_point():
    assert downsample([1, 2, 3], [0.5, 0.4, 0.3], columns=100, last_step=10) == [(1.0, 0.5), (2.0, 0.4), (3.0, 0.3)]


def test_a_long_history_is_averaged_into_at_most_one_point_per_column():
    steps = list(range(1, 100_001))
    values = [float(step % 2) for step in steps]  # 0, 1, 0, 1, ...: every column averages to one half
    points = downsample(steps, values, columns=500, last_step=100_000)
    assert len(points) == 500
    assert [step for step, _ in points] == sorted(step for step, _ in points)
    assert all(abs(value - 0.5) < 0.01 for _, value in points)
    assert points[0][0] < 200 and points[-1][0] > 99_800


def test_durations_read_like_a_clock():
    assert format_duration(0) == "0:00"
    assert format_duration(61.4) == "1:01"
    assert format_duration(3 * 3600 + 5 * 60 + 9) == "3:05:09"


def test_speed_is_in_steps_per_second_or_seconds_per_step_as_tqdm_says_it():
    assert format_speed(2.5) == "2.50 it/s"
    assert format_speed(0.25) == "4.00 s/it"
    assert format_speed(0.0) == "-"


def test_the_prompt_is_shown_without_its_options():
    assert prompt_text("shpz, a red circle --w 64 --h 64 --s 10") == "shpz, a red circle"
    assert prompt_text("a cat") == "a cat"


def test_samples_grow_with_crisp_pixels_and_shrink_to_fit():
    small = fit_into(Image.new("RGB", (64, 32), "red"), 200)
    large = fit_into(Image.new("RGB", (768, 1024), "red"), 200)
    assert small.size == (200, 100) and large.size == (150, 200)


def test_the_epoch_bar_moves_within_an_epoch():
    step = Step(step=15, total_steps=40, epoch=2, epochs=4, loss=0.1, average_loss=0.1, lr=1e-4,
                steps_per_second=1.0, elapsed_s=15.0, eta_s=25.0)
    assert _fraction_of_epoch(step) == 0.5
