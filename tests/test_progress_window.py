"""The progress window on a virtual screen: a whole tiny run, Stop pressed in the middle, the popups at the end.

The training is real (the demo model, 64 px, a few steps); the Stop button, its confirmation and the popups are
pressed through the X server as a person would, from a driver thread that never touches Tk.
"""

from __future__ import annotations

import gc
import re
import time
from pathlib import Path
from tkinter import font as tkfont

import pytest

from sd_scripts.events import Finished
from sd_scripts.saving import load_lora_file
from test_progress_fixtures import EventLog, one_repeat_images, tiny_args  # noqa: F401 (fixtures)
from test_tk_fixtures import ScreenReader, answer_on_screen
from wizard.askers.tk_asker import TkAsker
from wizard.config import TrainConfig
from wizard.progress_window import STOP_CONFIRM_TITLE, ProgressWindow
from wizard.runner import train_config
from xvfb import ARTIFACTS, VirtualDisplay, shared_virtual_display, virtual_display  # noqa: F401 (fixtures)

SCREENSHOTS = ARTIFACTS / "screenshots"
RUN_TIMEOUT = 300.0


@pytest.fixture
def asker(virtual_display: VirtualDisplay) -> TkAsker:
    made = TkAsker()
    yield made
    made.close()
    del made
    gc.collect()  # the Tk interpreter is freed here, on its own thread


def tiny_config(demo, images: Path, output: Path, **changes) -> TrainConfig:
    """The wizard's settings for two steps of the demo model at 64 px, named "tiny"."""
    config = TrainConfig(cuda=False)
    values = dict(base_model=str(demo.model), img_folder=str(images), output_folder=str(output),
                  change_output_name="tiny", net_dim=4, alpha=4.0, optimizer_type="AdamW", learning_rate=1e-3,
                  scheduler="constant", train_resolution=64, buckets=False, batch_size=2, num_epochs=1, max_steps=2,
                  mixed_precision="no", cache_latents=True, tag_occurrence_txt_file=False)
    for name, value in (values | changes).items():
        config.set(name, value)
    return config


def wait_for_label(reader: ScreenReader, title: str, pattern: str, timeout: float = RUN_TIMEOUT):
    """What the window titled `title` shows, once one of its labels matches `pattern`."""
    deadline = time.monotonic() + timeout
    while True:
        seen = reader.look(title)
        if any(re.fullmatch(pattern, label) for label in seen.labels):
            return seen
        assert time.monotonic() < deadline, f"No label like {pattern!r} in {title!r}; it shows {seen.labels}."
        time.sleep(0.2)


def test_the_window_shows_a_whole_run_to_the_end(virtual_display, asker, demo, one_repeat_images, tmp_path):
    events = EventLog()
    args = tiny_args(demo, one_repeat_images, tmp_path / "out", steps=4, with_sample=True)
    window = ProgressWindow(asker.root, args, name="tiny", run_position=(2, 3), echo=events)
    watchdog = asker.root.after(int(RUN_TIMEOUT * 1000), window.close)  # a hung run fails instead of hanging
    result = window.run_until_done()
    asker.root.after_cancel(watchdog)

    assert result.ok, result.message
    assert float(window.step_bar.cget("value")) == float(window.step_bar.cget("maximum")) == 4
    assert float(window.epoch_bar.cget("value")) == float(window.epoch_bar.cget("maximum")) == 1
    assert window.curve.point_count == 4 and window.curve.canvas.find_withtag("curve")
    assert window.samples.shown_count == 1
    assert window.run_label.cget("text") == "run 2 of 3"
    assert window.status.cget("text") == f"Finished: {result.lora_path}"
    assert window.stop_button.cget("text") == "Close"
    assert window.window.title() == "Finished · Training tiny"  # the taskbar shows the outcome first
    asker.root.update()
    screenshot = virtual_display.screenshot(SCREENSHOTS / "progress_window_finished.png")
    assert_loss_plot_shown(window, Path(events.of(Finished)[0].loss_plot), screenshot)
    window.close()


def assert_loss_plot_shown(window: ProgressWindow, plot: Path, screenshot: Path) -> None:
    """In the finished window the live curve has given way to the trainer's loss chart, drawn from the run's loss
    table in the window's colours at the size of the curve's place, on the screen pixel for pixel."""
    from PIL import Image, ImageChops, ImageStat

    from sd_scripts.training.logs import read_loss_table
    from sd_scripts.training.loss_plot import PLOT_TEXT_PIXELS, PlotColours, render_loss_plot

    assert plot == Path(window.output_folder) / "demo-loss.png" and plot.is_file()
    assert window.loss_plot.winfo_ismapped() and not window.curve.canvas.winfo_ismapped()
    rows = read_loss_table(plot.with_suffix(".csv"))
    colours = window.colours
    canvas = window.curve.canvas
    text_points = tkfont.nametofont("TkDefaultFont", window.root).actual("size")
    expected = render_loss_plot([row.step for row in rows], [row.loss for row in rows], title="Loss of demo",
                                colours=PlotColours(colours.canvas, colours.frame, colours.grid, colours.text,
                                                    colours.raw_line, colours.accent),
                                size=(canvas.winfo_width(), canvas.winfo_height()),
                                scale=window.root.winfo_fpixels(f"{text_points}p") / PLOT_TEXT_PIXELS)
    label = window.loss_plot
    left = label.winfo_rootx() + (label.winfo_width() - expected.width) // 2
    top = label.winfo_rooty() + (label.winfo_height() - expected.height) // 2
    with Image.open(screenshot) as screen:
        shown = screen.convert("RGB").crop((left, top, left + expected.width, top + expected.height))
    assert max(ImageStat.Stat(ImageChops.difference(shown, expected)).mean) < 2


def test_stop_in_the_middle_saves_a_lora_that_loads(virtual_display, asker, demo, one_repeat_images, tmp_path):
    events = EventLog()
    window = ProgressWindow(asker.root, tiny_args(demo, one_repeat_images, tmp_path / "out", steps=50),
                            name="tiny", echo=events)

    def press_stop(reader: ScreenReader) -> None:
        seen = wait_for_label(reader, "Training tiny", r"[1-9]\d* / 50")
        virtual_display.click(*seen.buttons["Stop"])
        confirm = reader.look(STOP_CONFIRM_TITLE)
        virtual_display.click(*confirm.buttons["Stop and save"])
        seen = wait_for_label(reader, "Training tiny", r"Stopping after this step and saving\.\.\.|Stopped at .*")
        assert "Stop" in seen.disabled or "Close" in seen.buttons

    result = answer_on_screen(asker.root, window.run_until_done, press_stop, timeout=RUN_TIMEOUT)

    finished = events.of(Finished)
    assert len(finished) == 1 and finished[0].stopped_early and 1 <= finished[0].steps < 50
    assert result.ok and result.lora_path == finished[0].lora_path
    tensors, _ = load_lora_file(result.lora_path)
    assert any(key.startswith("lora_unet_") for key in tensors)
    assert window.status.cget("text").startswith(f"Stopped at step {finished[0].steps}")
    window.close()


def test_the_final_popup_names_the_file_and_close_ends_the_run(virtual_display, asker, demo, one_repeat_images,
                                                             tmp_path):
    popup_text: list[str] = []

    def read_popup_then_close(reader: ScreenReader) -> None:
        popup = reader.look("Training finished", timeout=RUN_TIMEOUT)
        popup_text.append("\n".join(popup.labels))
        virtual_display.screenshot(SCREENSHOTS / "progress_window_final_popup.png")
        virtual_display.click(*popup.buttons["OK"])
        window = wait_for_label(reader, "Training tiny", r"Finished: .*")
        virtual_display.click(*window.buttons["Close"])

    config = tiny_config(demo, one_repeat_images, tmp_path / "out")
    result = answer_on_screen(asker.root, lambda: train_config(config, asker), read_popup_then_close,
                              timeout=RUN_TIMEOUT)

    assert result.ok and Path(result.lora_path).name == "tiny.safetensors"
    text = popup_text[0]
    assert result.lora_path in text and "models/Lora" in text and "\u201cshpz\u201d" in text


def test_a_failure_is_shown_in_its_sentence_with_its_advice(virtual_display, asker, demo, tmp_path):
    empty = tmp_path / "images"
    (empty / "5_nothing").mkdir(parents=True)
    seen_in: dict[str, list[str]] = {}

    def read_failure_then_close(reader: ScreenReader) -> None:
        popup = reader.look("Training failed", timeout=RUN_TIMEOUT)
        seen_in["popup"] = popup.labels
        seen_in["window"] = reader.look("Training tiny").labels
        virtual_display.screenshot(SCREENSHOTS / "progress_window_failed.png")
        virtual_display.click(*popup.buttons["OK"])
        virtual_display.click(*reader.look("Training tiny").buttons["Close"])

    config = tiny_config(demo, empty, tmp_path / "out")
    result = answer_on_screen(asker.root, lambda: train_config(config, asker), read_failure_then_close,
                              timeout=RUN_TIMEOUT)

    assert not result.ok and "No training images were found" in result.message
    told = result.message + (f" {result.advice}" if result.advice else "")
    assert told in seen_in["popup"] and told in seen_in["window"]
