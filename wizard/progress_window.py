"""The window users watch while their LoRA trains: progress, speed, time left, the loss curve, the latest samples.

It is a Toplevel of the wizard's one Tk root with its own taskbar entry. The training runs in a worker thread
(`TrainingSession`); this window takes the trainer's events off the session's queue on a Tk timer, so every Tk call
happens on the main thread. Drawing stays cheap so the window answers at once while the trainer works: labels take
only the newest step of each batch of events, and the loss curve (one polyline over at most one point per pixel) is
redrawn at most a few times a second.

If the display goes away during the run (an X server or SSH forwarding ended, a remote desktop dropped), the training
goes on: the console shows the rest of it and the program ends with its outcome (see `_follow_in_console`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
import time
import tkinter as tk
from pathlib import Path
from tkinter import font as tkfont
from tkinter import ttk

from sd_scripts.args import TrainArgs
from sd_scripts.events import EpochEnd, Event, EventHandler, Failed, Finished, SampleMade, Saved, Started, Step
from sd_scripts.errors import UserFacingError
from sd_scripts.training.logs import read_loss_table
from sd_scripts.training.loss_plot import PLOT_TEXT_PIXELS, PlotColours, plot_title, render_loss_plot
from sd_scripts.training.outputs import DEFAULT_OUTPUT_NAME, OutputNames
from sd_scripts.training.result import TrainResult
from wizard.askers.tk_theme import PROGRESS_STYLE, flash_taskbar, palette
from wizard.askers.tk_widgets import ask_confirm, show_message
from wizard.training_session import TrainingSession

POLL_MS = 75  # how often the event queue is drained: fast enough to feel live, rare enough to cost nothing
CURVE_REDRAW_S = 0.25  # the loss curve is redrawn at most this often
SAMPLE_SLOTS = 3  # the newest image of this many prompts is shown
SAMPLE_SIZE = "150p"  # the longer side of a shown sample, in points (200 pixels at 96 dpi)
SMOOTHING = 0.9  # weight of the past in the smoothed loss line, as TensorBoard's slider
TITLE_SEPARATOR = " · "  # between the percent and time left and the window's name: "45% · 2:10 left · Training x"
STOP_CONFIRM_TITLE = "Stop the training?"
STOP_CONFIRM_TEXT = ("Stop the training now? What was learned so far is saved as a LoRA you can use, with a state "
                     "to continue the training from later.")


class ProgressWindow:
    """Starts training `args` in a worker thread and shows it; `run_until_done()` returns the trainer's result.

    After the end the window stays open with the final figures and the run's loss plot (Stop becomes Close) until
    `wait_until_closed()` sees the user close it, or `close()` is called (the queue moves on to its next run by itself).
    """

    def __init__(self, root: tk.Misc, args: TrainArgs, *, name: str,
                 run_position: tuple[int, int] | None = None, echo: EventHandler | None = None) -> None:
        self.root = root
        self.output_folder = Path(args.output_dir or ".")
        self.output_name = args.output_name or DEFAULT_OUTPUT_NAME
        self.window = tk.Toplevel(root)
        self.name = f"Training {name}"
        self.window.title(self.name)
        self.window.protocol("WM_DELETE_WINDOW", self._stop_or_close)
        self._fonts = _Fonts(root)
        self.colours = palette(root)
        self._finished = tk.BooleanVar(root, value=False)
        self._clock = _RunClock()
        self._build(name, run_position, bool(args.sample_prompts))
        self._show_centred()
        self.session = TrainingSession(args, on_done=self._on_done, echo=echo)
        _guard_against_display_loss(self)
        self._timer: str | None = self.window.after(POLL_MS, self._poll)
        self.window.bind("<Destroy>", self._on_destroy, add="+")

    # -- what the runner calls ------------------------------------------------------------------------------------

    def run_until_done(self) -> TrainResult:
        """Run Tk's event loop until the trainer has ended and every event is shown; the trainer's result."""
        self.root.wait_variable(self._finished)
        if self.session.result is None:  # the window was destroyed during the run: the trainer stops and saves first
            self.session.wait()
        return self.session.result

    def wait_until_closed(self) -> None:
        if self.window.winfo_exists():
            self.window.wait_window()

    def close(self) -> None:
        self._stop_guarding()
        if self._timer is not None:
            self.window.after_cancel(self._timer)
            self._timer = None
        if self.window.winfo_exists():
            self.window.destroy()

    # -- building -------------------------------------------------------------------------------------------------

    def _build(self, name: str, run_position: tuple[int, int] | None, has_samples: bool) -> None:
        pad = self._fonts.pad
        body = ttk.Frame(self.window, padding=2 * pad)
        body.pack(fill="both", expand=True)
        body.columnconfigure(0, weight=1)

        top = ttk.Frame(body)
        top.columnconfigure(0, weight=1)
        ttk.Label(top, text=f"Training {name}", font=self._fonts.heading).grid(row=0, column=0, sticky="w")
        self.run_label = ttk.Label(top, text=f"run {run_position[0]} of {run_position[1]}" if run_position else "",
                                   font=self._fonts.bold)
        self.run_label.grid(row=0, column=1, sticky="e")
        self.about_label = ttk.Label(top, text="Loading the model and the images...",
                                     foreground=self.colours.muted)
        self.about_label.grid(row=1, column=0, columnspan=2, sticky="w")
        top.grid(row=0, column=0, sticky="ew", pady=(0, pad))

        bars = ttk.Frame(body)
        bars.columnconfigure(1, weight=1)
        self.step_bar, self.step_count = self._progress_row(bars, 0, "Steps")
        self.epoch_bar, self.epoch_count = self._progress_row(bars, 1, "Epochs")
        bars.grid(row=1, column=0, sticky="ew", pady=(0, pad))

        figures = ttk.Frame(body)
        self.figures: dict[str, ttk.Label] = {}
        layout = (("Speed", "Elapsed", "Time left"), ("Loss", "Average loss (epoch)", "Learning rate"))
        for row, names in enumerate(layout):
            for column, label in enumerate(names):
                ttk.Label(figures, text=label + ":", foreground=self.colours.muted).grid(
                    row=row, column=2 * column, sticky="w", padx=(0 if column == 0 else 3 * pad, pad // 2))
                self.figures[label] = ttk.Label(figures, text="-", font=self._fonts.bold, width=12)
                self.figures[label].grid(row=row, column=2 * column + 1, sticky="w")
        figures.grid(row=2, column=0, sticky="w", pady=(0, pad))

        self.curve = LossCurve(body, self._fonts)
        self.curve.canvas.grid(row=3, column=0, sticky="nsew", pady=(0, pad))
        body.rowconfigure(3, weight=1)

        self.samples = SampleStrip(body, self._fonts, has_samples)
        self.samples.frame.grid(row=4, column=0, sticky="ew", pady=(0, pad))

        self.status = ttk.Label(body, text="", wraplength=self._fonts.wraplength, justify="left")
        self.status.grid(row=5, column=0, sticky="ew", pady=(0, pad))

        buttons = ttk.Frame(body)
        self.open_button = ttk.Button(buttons, text="Open output folder", command=self._open_output_folder)
        self.open_button.pack(side="left")
        self.stop_button = ttk.Button(buttons, text="Stop", command=self._stop_or_close)
        self.stop_button.pack(side="right")
        buttons.grid(row=6, column=0, sticky="ew")

    def _progress_row(self, parent: ttk.Frame, row: int, label: str) -> tuple[ttk.Progressbar, ttk.Label]:
        pad = self._fonts.pad
        ttk.Label(parent, text=label).grid(row=row, column=0, sticky="w", padx=(0, pad))
        bar = ttk.Progressbar(parent, orient="horizontal", mode="determinate", maximum=1, value=0,
                              style=PROGRESS_STYLE)
        bar.grid(row=row, column=1, sticky="ew", pady=pad // 4)
        count = ttk.Label(parent, text="", width=14, anchor="e")
        count.grid(row=row, column=2, sticky="e", padx=(pad, 0))
        return bar, count

    def _show_centred(self) -> None:
        self.window.update_idletasks()
        width, height = self.window.winfo_reqwidth(), self.window.winfo_reqheight()
        x = max(0, (self.window.winfo_screenwidth() - width) // 2)
        y = max(0, (self.window.winfo_screenheight() - height) // 4)
        self.window.geometry(f"+{x}+{y}")
        self.window.deiconify()
        self.window.lift()
        self.window.focus_force()

    # -- events ---------------------------------------------------------------------------------------------------

    def _poll(self) -> None:
        """Show what the trainer reported since the last tick; runs on Tk's thread every POLL_MS."""
        self._timer = None
        if not self.window.winfo_exists():
            return
        newest_step: Step | None = None
        for event in self.session.poll():
            if isinstance(event, Step):
                newest_step = event
                self.curve.add(event.step, event.loss)
            else:
                if newest_step is not None:  # keep the figures in order with what comes after them
                    self._show_step(newest_step)
                    newest_step = None
                self._show(event)
        if newest_step is not None:
            self._show_step(newest_step)
        self._show_times()
        self.curve.redraw_if_due()
        if not self.session.done and self.window.winfo_exists():
            self._timer = self.window.after(POLL_MS, self._poll)

    def _show(self, event: Event) -> None:
        if isinstance(event, Started):
            self._clock.start()
            self.curve.set_total_steps(event.total_steps)
            self.step_bar.configure(maximum=event.total_steps)
            self.epoch_bar.configure(maximum=event.epochs)
            self.step_count.configure(text=f"0 / {event.total_steps}")
            self.epoch_count.configure(text=f"0 / {event.epochs}")
            images = f"{event.num_train_images} training images"
            if event.num_reg_images:
                images += f" and {event.num_reg_images} regularization images"
            self.about_label.configure(text=f"On {event.device}: {_plural(event.total_steps, 'step')} in "
                                            f"{_plural(event.epochs, 'epoch')}, {images} (with repeats).")
            self._say("Training started." if not self.session.stopping else "Stopping after this step and saving...")
        elif isinstance(event, EpochEnd):
            self.epoch_bar.configure(value=event.epoch)
            self.epoch_count.configure(text=f"{event.epoch} / {event.epochs}")
        elif isinstance(event, SampleMade):
            self.samples.show(event)
        elif isinstance(event, Saved):
            state = " and a state to continue from" if event.state_dir else ""
            self._say(f"Saved {Path(event.path).name}{state} (epoch {event.epoch}, step {event.step}).")
        elif isinstance(event, Finished):
            self._clock.stop(event.elapsed_s)
            if event.stopped_early:
                self._say(f"Stopped at step {event.steps}; what was learned is saved in {Path(event.lora_path).name}.")
            else:
                self.step_bar.configure(value=self.step_bar.cget("maximum"))
                self.epoch_bar.configure(value=self.epoch_bar.cget("maximum"))
                self._say(f"Finished: {event.lora_path}")
            self.figures["Time left"].configure(text="-")
            if event.loss_plot:
                self._show_loss_plot(Path(event.loss_plot))
        elif isinstance(event, Failed):
            self._clock.stop(None)
            self.about_label.configure(text="The training stopped on a problem:")
            self._say(event.message + (f" {event.advice}" if event.advice else ""), error=True)

    def _show_step(self, event: Step) -> None:
        self._clock.step(event.elapsed_s, event.eta_s)
        self.step_bar.configure(value=event.step)
        self.step_count.configure(text=f"{event.step} / {event.total_steps}")
        self.epoch_bar.configure(value=event.epoch - 1 + _fraction_of_epoch(event))
        self.epoch_count.configure(text=f"{event.epoch} / {event.epochs}")
        self.figures["Speed"].configure(text=format_speed(event.steps_per_second))
        self.figures["Loss"].configure(text=f"{event.loss:.4f}")
        self.figures["Average loss (epoch)"].configure(text=f"{event.average_loss:.4f}")
        self.figures["Learning rate"].configure(text=f"{event.lr:.2e}")

    def _show_loss_plot(self, path: Path) -> None:
        """At the end the live curve gives way to the run's loss plot: the chart the trainer wrote beside the LoRA,
        drawn again from its loss table in the window's colours (the PNG file itself is on white paper) at the size
        of the curve's place, so the window keeps its size and the lettering stays sharp at any scaling."""
        from PIL import Image, ImageTk

        canvas = self.curve.canvas
        size = (max(canvas.winfo_width(), canvas.winfo_reqwidth()),
                max(canvas.winfo_height(), canvas.winfo_reqheight()))
        try:
            rows = read_loss_table(OutputNames(self.output_folder, self.output_name, "safetensors").loss_table())
            shown = render_loss_plot([row.step for row in rows], [row.loss for row in rows],
                                     title=plot_title(self.output_name), colours=self._plot_colours(), size=size,
                                     scale=self._fonts.text_pixels / PLOT_TEXT_PIXELS)
        except (OSError, UserFacingError):  # the table is gone or not this run's: show the file as it is
            with Image.open(path) as image:
                scale = min(size[0] / image.width, size[1] / image.height)
                shown = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                                    Image.LANCZOS)
        self.loss_plot_image = ImageTk.PhotoImage(shown, master=self.window)  # kept referenced while shown
        self.loss_plot = ttk.Label(canvas.master, image=self.loss_plot_image)
        place = canvas.grid_info()
        canvas.grid_remove()
        self.loss_plot.grid(row=place["row"], column=place["column"], pady=place["pady"])

    def _plot_colours(self) -> PlotColours:
        colours = self.colours
        return PlotColours(background=colours.canvas, frame=colours.frame, grid=colours.grid, text=colours.text,
                           raw=colours.raw_line, average=colours.accent)

    def _show_times(self) -> None:
        elapsed, left = self._clock.now()
        self._set_if_changed(self.figures["Elapsed"], format_duration(elapsed) if elapsed is not None else "-")
        if left is not None:
            self._set_if_changed(self.figures["Time left"], format_duration(left))
        total = float(self.step_bar.cget("maximum"))
        if self._clock.ended_after is None and self._clock.last is not None and total > 0:
            percent = int(100 * float(self.step_bar.cget("value")) / total)
            self._set_title(f"{percent}%", f"{format_duration(left)} left" if left is not None else None)

    def _set_title(self, *parts: str | None) -> None:
        """The window's title, with how far it is first: the taskbar shows the start of it."""
        title = TITLE_SEPARATOR.join([part for part in parts if part] + [self.name])
        if self.window.title() != title:
            self.window.title(title)

    def _on_done(self, result: TrainResult) -> None:
        """The trainer ended and every event is shown: Stop becomes Close, the title and the taskbar say how it
        ended, and `run_until_done` returns."""
        if result.notes:
            self._say(self.status.cget("text") + "\n" + "\n".join(result.notes), error=not result.ok)
        self.stop_button.configure(text="Close", state="normal")
        self._set_title("Finished" if result.ok else "Failed")
        flash_taskbar(self.window)
        self._stop_guarding()
        self._finished.set(True)

    def _on_destroy(self, event: tk.Event) -> None:
        """Closed from outside during the run (its root went away): stop the trainer, and let the runner go on."""
        if event.widget is self.window and not self._finished.get():
            self.session.stop()
            self._finished.set(True)

    def _stop_guarding(self) -> None:
        """The run is over: a lost display ends the program as Xlib ends it (see `_guard_against_display_loss`)."""
        if _watched_window and _watched_window[0] is self:
            _watched_window.clear()

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.configure(text=text, foreground=self.colours.error if error else "")

    @staticmethod
    def _set_if_changed(label: ttk.Label, text: str) -> None:
        if label.cget("text") != text:
            label.configure(text=text)

    # -- buttons --------------------------------------------------------------------------------------------------

    def _stop_or_close(self) -> None:
        if self.session.done:
            self.close()
            return
        if self.session.stopping:
            return
        if ask_confirm(self.root, STOP_CONFIRM_TITLE, STOP_CONFIRM_TEXT, yes="Stop and save", no="Keep training",
                       kind="warning"):
            if self.session.done:  # it ended while the question was open
                return
            self.session.stop()
            self.stop_button.configure(state="disabled")
            self._say("Stopping after this step and saving...")

    def _open_output_folder(self) -> None:
        folder = self.output_folder
        try:
            open_in_file_manager(folder)
        except OSError:
            show_message(self.root, "Could not open the folder",
                         f"The folder could not be opened here; it is {folder.resolve()}.", "error")


# -- a lost display ---------------------------------------------------------------------------------------------------
_IO_ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)  # Xlib's XIOErrorHandler
_watched_window: list[ProgressWindow] = []  # the window whose running training a lost display must not end
_handlers: list = []  # [ours, Xlib's previous one] once installed, kept alive as long as the process


def _guard_against_display_loss(window: ProgressWindow) -> None:
    """On X11, put `_follow_in_console` before Xlib's I/O error handler, which ends the whole process (trainer and
    all, perhaps halfway through a save) when the connection to the display breaks."""
    if window.root.tk.call("tk", "windowingsystem") != "x11":
        return  # Windows and macOS windows have no display connection to lose
    _watched_window[:] = [window]
    library = ctypes.util.find_library("X11")
    if not _handlers and library is not None:
        x11 = ctypes.CDLL(library)  # the library Tk uses: loaded once per process
        x11.XSetIOErrorHandler.restype = ctypes.c_void_p
        ours = _IO_ERROR_HANDLER(_follow_in_console)
        _handlers[:] = [ours, _IO_ERROR_HANDLER(x11.XSetIOErrorHandler(ours))]


def _follow_in_console(display: int) -> int:
    """Xlib found the display gone, in the Tk thread. While a training runs this handler must not return (Xlib
    would end the process) nor touch Tk (its display is gone): the console follows the training to its end, and
    then the program ends with the training's outcome, its files saved as planned. Otherwise Xlib's own handler."""
    window = _watched_window[0] if _watched_window else None
    if window is None or window.session.done:
        return _handlers[1](display)
    print("The connection to the display was lost; the training goes on, and its progress shows here.",
          file=sys.stderr, flush=True)
    result = window.session.follow_in_console()
    print(result.message + (f" {result.advice}" if result.advice else ""), flush=True)
    sys.stderr.flush()
    os._exit(0 if result.ok else 1)


class LossCurve:
    """The step losses on a Canvas: the raw values in a light line, a smoothed line over them, a few axis labels.

    Long histories are averaged into at most one point per pixel column, so a redraw costs the same at step 100
    and at step 100,000.
    """

    RAW_WIDTH, SMOOTH_WIDTH = "0.75p", "1.5p"  # line widths in points, so they grow with the screen's DPI

    def __init__(self, parent: tk.Misc, fonts: _Fonts) -> None:
        self.fonts = fonts
        self.colours = palette(parent)
        self.canvas = tk.Canvas(parent, width="480p", height="165p", background=self.colours.canvas,
                                highlightthickness=1, highlightbackground=self.colours.frame)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self._average = BiasCorrectedAverage(SMOOTHING)
        self.total_steps = 0
        self._dirty = True
        self._drawn_at = 0.0
        self.canvas.bind("<Configure>", lambda event: self.redraw())

    def set_total_steps(self, total: int) -> None:
        self.total_steps = total
        self._dirty = True

    def add(self, step: int, loss: float) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self.smoothed.append(self._average.add(loss))
        self._dirty = True

    def redraw_if_due(self) -> None:
        if self._dirty and time.monotonic() - self._drawn_at >= CURVE_REDRAW_S:
            self.redraw()

    def redraw(self) -> None:
        self._dirty = False
        self._drawn_at = time.monotonic()
        canvas = self.canvas
        canvas.delete("all")
        width, height = canvas.winfo_width(), canvas.winfo_height()
        text_height = self.fonts.small.metrics("linespace")
        last_label = str(max(self.total_steps, self.steps[-1] if self.steps else 0))
        left = self.fonts.small.measure("0.00000") + 10  # room for 4 digits of a loss like 0.06326
        right = width - max(12, self.fonts.small.measure(last_label) // 2 + 4)  # the last step's number fits
        top, bottom = text_height + 6, height - 2 * text_height - 4
        if right - left < 20 or bottom - top < 20:
            return
        if not self.losses:
            canvas.create_rectangle(left, top, right, bottom, outline=self.colours.frame)
            canvas.create_text((left + right) / 2, (top + bottom) / 2, text="The loss of each step is drawn here.",
                               fill=self.colours.muted, font=self.fonts.small)
            return
        self._draw_legend(right, text_height // 2 + 1)
        last_step = max(self.total_steps, self.steps[-1])
        raw = downsample(self.steps, self.losses, columns=right - left, last_step=last_step)
        smooth = downsample(self.steps, self.smoothed, columns=right - left, last_step=last_step)
        values = [value for _, value in raw]
        low, high = min(values), max(values)
        if high - low < 1e-6:
            low, high = low - 0.5 * max(abs(low), 1e-3), high + 0.5 * max(abs(high), 1e-3)
        low, high = low - 0.05 * (high - low), high + 0.05 * (high - low)

        def x_of(step: float) -> float:
            return left + (right - left) * step / last_step

        def y_of(value: float) -> float:
            return bottom - (bottom - top) * (value - low) / (high - low)

        for fraction in (0.0, 0.5, 1.0):
            value = low + fraction * (high - low)
            y = y_of(value)
            canvas.create_line(left, y, right, y, fill=self.colours.grid)
            canvas.create_text(left - 4, y, text=f"{value:.4g}", anchor="e", fill=self.colours.muted,
                               font=self.fonts.small)
        for step in sorted({round(fraction * last_step) for fraction in (0.0, 0.25, 0.5, 0.75, 1.0)}):
            x = x_of(step)
            canvas.create_line(x, top, x, bottom, fill=self.colours.grid)
            canvas.create_text(x, bottom + 3, text=str(step), anchor="n", fill=self.colours.muted,
                               font=self.fonts.small)
        canvas.create_text((left + right) / 2, height - 2, text="step", anchor="s", fill=self.colours.muted,
                           font=self.fonts.small)
        canvas.create_rectangle(left, top, right, bottom, outline=self.colours.frame)
        for points, colour, line_width in ((raw, self.colours.raw_line, self.RAW_WIDTH),
                                           (smooth, self.colours.accent, self.SMOOTH_WIDTH)):
            coordinates = [number for step, value in points for number in (x_of(step), y_of(value))]
            if len(points) == 1:
                x, y = coordinates
                canvas.create_oval(x - 2, y - 2, x + 2, y + 2, fill=colour, outline=colour, tags="curve")
            elif points:
                canvas.create_line(*coordinates, fill=colour, width=line_width, tags="curve")

    def _draw_legend(self, right: int, y: int) -> None:
        """"- loss  - smoothed" at the top right, each with a piece of its line."""
        x = right
        for text, colour, line_width in (("smoothed", self.colours.accent, self.SMOOTH_WIDTH),
                                         ("loss of each step", self.colours.raw_line, self.RAW_WIDTH)):
            x -= self.fonts.small.measure(text)
            self.canvas.create_text(x, y, text=text, anchor="w", fill=self.colours.muted, font=self.fonts.small)
            self.canvas.create_line(x - 22, y, x - 4, y, fill=colour, width=line_width)
            x -= 36

    @property
    def point_count(self) -> int:
        return len(self.losses)


class BiasCorrectedAverage:
    """TensorBoard's smoothing: an exponential moving average started at 0 and divided by 1 - weight**n.

    Started at the first loss instead, the line would lean on that one value for dozens of steps; corrected, each
    point is the weighted mean of the losses so far, so the line follows the data from the start.
    """

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.total = 0.0
        self.count = 0

    def add(self, value: float) -> float:
        """The smoothed value once `value` is in."""
        self.total = self.weight * self.total + (1 - self.weight) * value
        self.count += 1
        return self.total / (1 - self.weight ** self.count)


def downsample(steps: list[int], values: list[float], *, columns: int, last_step: int) -> list[tuple[float, float]]:
    """(step, value) points, averaged per column when there are more points than columns, in step order."""
    if len(values) <= columns:
        return list(zip(map(float, steps), values))
    sums: dict[int, list[float]] = {}
    for step, value in zip(steps, values):
        column = min(columns - 1, int(step / last_step * columns))
        bucket = sums.setdefault(column, [0.0, 0.0, 0])
        bucket[0] += step
        bucket[1] += value
        bucket[2] += 1
    return [(total_step / count, total_value / count) for _, (total_step, total_value, count) in sorted(sums.items())]


class SampleStrip:
    """The newest sample image of each of the first SAMPLE_SLOTS prompts, scaled to fit, with its prompt below."""

    def __init__(self, parent: tk.Misc, fonts: _Fonts, has_samples: bool) -> None:
        self.frame = ttk.Frame(parent)
        self.fonts = fonts
        self.size = round(self.frame.winfo_fpixels(SAMPLE_SIZE))
        self.slots: dict[str, tuple[ttk.Label, ttk.Label]] = {}
        self.images: dict[str, object] = {}  # PhotoImages must stay referenced while shown
        self.hint = ttk.Label(self.frame, foreground=palette(parent).muted, text=(
            "The sample images will appear here as they are made." if has_samples
            else "No sample prompts were given, so no sample images are made during this training."))
        self.hint.grid(row=0, column=0, sticky="w")

    def show(self, sample: SampleMade) -> None:
        from PIL import Image, ImageTk

        if sample.prompt not in self.slots:
            if len(self.slots) >= SAMPLE_SLOTS:
                return
            self.hint.grid_remove()
            column = len(self.slots)
            picture = ttk.Label(self.frame)
            picture.grid(row=0, column=column, padx=(0, self.fonts.pad), sticky="n")
            caption = ttk.Label(self.frame, wraplength=self.size, justify="center",
                                foreground=palette(self.frame).text, font=self.fonts.small)
            caption.grid(row=1, column=column, padx=(0, self.fonts.pad), sticky="n")
            self.slots[sample.prompt] = (picture, caption)
        picture, caption = self.slots[sample.prompt]
        with Image.open(sample.path) as image:
            shown = fit_into(image.convert("RGB"), self.size)
        photo = ImageTk.PhotoImage(shown, master=self.frame)
        self.images[sample.prompt] = photo
        picture.configure(image=photo)
        caption.configure(text=f"{prompt_text(sample.prompt)}\n(step {sample.step})")

    @property
    def shown_count(self) -> int:
        return len(self.images)


def fit_into(image, size: int):
    """`image` scaled so its longer side is `size`: small ones grow with crisp pixels, large ones shrink smoothly."""
    from PIL import Image

    scale = size / max(image.width, image.height)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(new_size, Image.NEAREST if scale >= 1 else Image.LANCZOS)


def prompt_text(prompt: str) -> str:
    """The prompt without sd-scripts' trailing options (`--w 512 --s 20 ...`)."""
    return prompt.split(" --", 1)[0].strip()


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def format_speed(steps_per_second: float) -> str:
    """it/s when a step takes less than a second, s/it otherwise, as tqdm says it."""
    if steps_per_second <= 0:
        return "-"
    if steps_per_second >= 1:
        return f"{steps_per_second:.2f} it/s"
    return f"{1 / steps_per_second:.2f} s/it"


def open_in_file_manager(folder: Path) -> None:
    """Show `folder` in the system's file manager; OSError when there is none."""
    if sys.platform == "win32":
        os.startfile(folder)  # noqa: S606 - a folder, opened by Explorer
    elif sys.platform == "darwin":
        subprocess.Popen(["open", str(folder)])
    else:
        subprocess.Popen(["xdg-open", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _fraction_of_epoch(event: Step) -> float:
    """How far into its epoch a step is, from the steps (epochs share the steps evenly)."""
    steps_per_epoch = event.total_steps / event.epochs
    done_before = (event.epoch - 1) * steps_per_epoch
    return min(1.0, max(0.0, (event.step - done_before) / steps_per_epoch))


class _RunClock:
    """Elapsed time and time left that tick every second between steps, from the trainer's last figures."""

    def __init__(self) -> None:
        self.started_at: float | None = None
        self.last: tuple[float, float, float] | None = None  # (elapsed, eta, when it was reported)
        self.ended_after: float | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()

    def step(self, elapsed: float, eta: float) -> None:
        self.last = (elapsed, eta, time.monotonic())

    def stop(self, elapsed: float | None) -> None:
        self.ended_after = elapsed if elapsed is not None else (self.now()[0] or 0.0)

    def now(self) -> tuple[float | None, float | None]:
        """(elapsed, time left); None where not known yet."""
        if self.ended_after is not None:
            return self.ended_after, None
        if self.last is not None:
            elapsed, eta, reported_at = self.last
            since = time.monotonic() - reported_at
            return elapsed + since, max(0.0, eta - since)
        if self.started_at is not None:
            return time.monotonic() - self.started_at, None
        return None, None


class _Fonts:
    """The window's fonts, derived from Tk's default so they follow `tk scaling`; kept alive as Tk needs."""

    def __init__(self, root: tk.Misc) -> None:
        default = tkfont.nametofont("TkDefaultFont", root)
        size = int(default.cget("size"))  # points when positive, pixels when negative (Tk's convention)
        self.heading = default.copy()
        self.heading.configure(weight="bold", size=size + 4 if size > 0 else size - 5)
        self.bold = default.copy()
        self.bold.configure(weight="bold")
        self.small = default.copy()
        self.small.configure(size=max(1, size - 1) if size > 0 else min(-1, size + 1))
        self.pad = default.metrics("linespace") // 2
        self.text_pixels = root.winfo_fpixels(f"{size}p") if size > 0 else -size  # the text's em, in pixels
        self.wraplength = int(default.measure("abcdefghijklmnopqrstuvwxyz") / 26 * 90)
