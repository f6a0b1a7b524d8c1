"""Every window of the wizard at 100 %, 150 % and 200 %, light and dark: it fits on the screen, no text is cut, and a
screenshot is kept.

The screenshots go to test-artifacts/screenshots/<window>-<theme>@<scale>.png (git-ignored) for a person to look at;
the checks compare what each widget asked Tk for with what it got, on the mapped window. Each scale has its own
virtual screen, of a size such screens have, and one wizard root that switches between the light and dark theme.
"""

from __future__ import annotations

import gc
import math
import re
import subprocess
import time
import tkinter as tk
from pathlib import Path
from random import Random
from typing import Any, Callable, NamedTuple

import pytest

import wizard.progress_window as progress_window_module
from questions import FLOWS
from sd_scripts.args import TrainArgs
from sd_scripts.events import EpochEnd, Failed, Finished, SampleMade, Saved, Started, Step
from sd_scripts.training.logs import LossRow, write_loss_table
from sd_scripts.training.loss_plot import draw_loss_plot
from sd_scripts.training.result import TrainResult
from wizard.askers.tk_asker import TkAsker
from wizard.askers.tk_report import show_report
from wizard.askers.tk_theme import apply_theme, has_urgency_hint
from wizard.config import TrainConfig
from wizard.progress_window import BiasCorrectedAverage, ProgressWindow
from wizard.question import Question
from wizard.summary import summary_rows
from xvfb import (  # noqa: F401  (fixtures)
    ARTIFACTS,
    VirtualDisplay,
    require_display_tools,
    shared_virtual_display,
    virtual_display,
)

SCREENSHOTS = ARTIFACTS / "screenshots"
LONG_HELP = ("Bigger learns more detail but makes a larger file and can copy the training images too closely. "
             "32 is a good start for a character; a style may want 64 or 128. Alpha, asked next, scales the "
             "learning: half of the dimension is the usual choice, and a smaller alpha trains more gently.")
SAMPLES: list[tuple[str, Question, Any]] = [
    ("yesno", Question("v2", "yesno", "Is your base model based on Stable Diffusion 2.x?",
                       help="Most anime and realistic models are SD 1.5 based: answer no. Answer yes for models "
                            "made from SD 2.0 or 2.1."), False),
    ("choice", Question("scheduler", "choice", "Which learning rate scheduler?",
                        help="How the learning rate changes during training. Cosine with restarts is a safe choice.",
                        choices=("cosine_with_restarts", "cosine", "polynomial", "constant",
                                 "constant_with_warmup", "linear")), "cosine_with_restarts"),
    ("int", Question("net_dim", "int", "Network dimension (rank)?", help=LONG_HELP), 32),
    ("float", Question("learning_rate", "float", "Learning rate?", help="1e-4 is the usual value."), 0.0001),
    ("text", Question("output_name", "text", "Name of the LoRA file?", help="Leave empty for the default."), "mychar"),
    ("list", Question("keep_tags", "list", "Tags to keep at the front of every caption?"), ["mychar", "red hair"]),
    ("file", Question("base_model", "file", "Which base model do you train on?",
                      help="A .safetensors or .ckpt file of a Stable Diffusion 1.x or 2.x model.",
                      extensions=("safetensors", "ckpt")), "/home/artist/models/anything-v4.5-pruned.safetensors"),
    ("folder", Question("img_folder", "folder", "Where are your training images?",
                        help="The folder that holds the N_name subfolders, like 10_mychar."), None),
]
ERROR = "Please type a number from 1 to 1024."


def problems_with_fit(root: tk.Tk, path: str) -> list[str]:
    """What does not fit in the mapped toplevel `path`: the window on the screen, each widget in what it asked for."""
    call = root.tk.call
    width, height = call("winfo", "width", path), call("winfo", "height", path)
    problems = []
    if call("winfo", "reqwidth", path) > call("winfo", "screenwidth", path) or \
            call("winfo", "reqheight", path) > call("winfo", "screenheight", path):
        problems.append(f"{path} asks for more than the screen")
    right, bottom = call("winfo", "rootx", path) + width, call("winfo", "rooty", path) + height

    def visit(widget: str) -> None:
        for child in root.tk.splitlist(call("winfo", "children", widget)):
            if call("winfo", "toplevel", child) != child and call("winfo", "ismapped", child):
                kind = call("winfo", "class", child)
                got = (call("winfo", "width", child), call("winfo", "height", child))
                wanted = (call("winfo", "reqwidth", child), call("winfo", "reqheight", child))
                if kind in ("TLabel", "TButton", "TEntry", "Text") and (got[0] < wanted[0] or got[1] < wanted[1]):
                    problems.append(f"{kind} {child} got {got}, asked for {wanted}")
                if call("winfo", "rootx", child) + got[0] > right or call("winfo", "rooty", child) + got[1] > bottom:
                    problems.append(f"{kind} {child} reaches outside its window")
                visit(child)

    visit(path)
    return problems


def inspect_then_close(asker: TkAsker, display: VirtualDisplay, shot_name: str | None, found: list[str]) -> None:
    """On the Tk thread, once the newest dialog is mapped and drawn: check its fit, photograph it, close it."""
    root = asker.root

    def when_mapped() -> None:
        dialogs = [w for w in root.winfo_children() if isinstance(w, tk.Toplevel)]
        if not dialogs or not dialogs[-1].winfo_ismapped():
            root.after(20, when_mapped)
            return
        root.after(DRAW_MS, lambda: inspect(dialogs[-1]))  # the theme's images are drawn on the first Expose

    def inspect(dialog: tk.Toplevel) -> None:
        root.update_idletasks()
        found.extend(problems_with_fit(root, str(dialog)))
        if shot_name is not None:
            photograph(dialog, display, SCREENSHOTS / shot_name)
        dialog.destroy()  # closed as a window manager would, without the question before leaving

    root.after(20, when_mapped)


DRAW_MS = 60


class Scale(NamedTuple):
    name: str  # in the screenshot's file name: 1x, 1.5x, 2x
    pixels_per_point: float  # Tk's scaling: 96, 144 and 192 dpi
    screen: tuple[int, int]  # a common screen of that scale: a small laptop, a 150 % laptop, a 200 % one


SCALES = [Scale("1x", 96 / 72, (1366, 768)), Scale("1.5x", 144 / 72, (1920, 1080)), Scale("2x", 192 / 72, (2560, 1600))]
THEMES = ("light", "dark")
ANSWERED = TrainConfig(cuda=True)  # a summary as an artist sees it: a few answers, one loaded value, the defaults
for _name, _value, _origin in (("base_model", "/home/artist/models/anything-v4.5-pruned.safetensors", "asked"),
                               ("img_folder", "/home/artist/lora/mychar/images", "asked"),
                               ("output_folder", "/home/artist/lora/mychar/output", "asked"),
                               ("change_output_name", "mychar_v1", "asked"), ("net_dim", 16, "loaded"),
                               ("alpha", 8.0, "loaded"), ("learning_rate", 2e-4, "asked"),
                               ("num_epochs", 12, "asked")):
    ANSWERED.set(_name, _value, origin=_origin)
REPORT = ("Images and captions\nFolder\tImages\tCaptions\tRepeats\n10_mychar\t24\t24\t10\n"
          "1_woman (regularization)\t120\t120\t1\n\nTraining length\n- 240 steps per epoch, 10 epochs: 2400 steps.\n"
          "- About 0:41:00 on this GPU.\n\nWarnings\n- 3 images are smaller than the training resolution and are "
          "upscaled; use larger images for sharper results.")


@pytest.fixture(scope="module", params=SCALES, ids=[scale.name for scale in SCALES])
def scaled_asker(request):
    """One virtual screen of the scale's size and one wizard root per scale; the themes switch on that root."""
    require_display_tools()
    scale: Scale = request.param
    display = VirtualDisplay(*scale.screen)
    patch = pytest.MonkeyPatch()
    patch.setenv("DISPLAY", display.name)
    asker = TkAsker(scaling=scale.pixels_per_point, theme="light")
    yield asker, scale, display
    asker.close()
    del asker
    gc.collect()
    patch.undo()
    # The display stays up until the process ends: Tk keeps its connection to it (see xvfb.shared_virtual_display).
    _DISPLAYS_TO_STOP.append(display)


_DISPLAYS_TO_STOP: list[VirtualDisplay] = []


@pytest.fixture(scope="session", autouse=True)
def _stop_scaled_displays():
    yield
    for display in _DISPLAYS_TO_STOP:
        display.stop()


@pytest.mark.parametrize("theme", THEMES)
def test_every_window_fits_and_is_photographed(scaled_asker, theme, tmp_path, monkeypatch):
    """Each popup kind, the summary, the report, the three messages and the progress window in three states."""
    asker, scale, display = scaled_asker
    apply_theme(asker.root, theme)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shows: list[tuple[str, Callable[[], Any]]] = [
        (kind, lambda q=question, d=default, k=kind: asker.ask(q, d, can_go_back=True,
                                                               error=ERROR if k == "int" else None))
        for kind, question, default in SAMPLES]
    rows = summary_rows(ANSWERED)
    shows += [
        ("summary", lambda: asker.summary(rows, "Check your settings")),
        ("report", lambda: show_report(asker.root, "Before training starts", REPORT)),
        ("message-info", lambda: asker.info("Settings saved", "Your settings were saved to "
                                                              "/home/artist/lora/config-mychar.json.")),
        ("message-error", lambda: asker.error("Could not save the settings", "The folder /mnt/usb is read-only: "
                                                                             "choose another folder.")),
        ("message-confirm", lambda: asker.confirm("Stop the wizard?", "Choose the base model to go on. Stop the "
                                                  "wizard without training?", yes="Stop the wizard", no="Keep going")),
    ]
    for kind, show in shows:
        found: list[str] = []
        shot = f"{kind}-{theme}@{scale.name}.png"
        inspect_then_close(asker, display, shot, found)
        show()
        assert not found, f"{kind} at {scale.name} in {theme}: {found}"
        assert (SCREENSHOTS / shot).stat().st_size > 1000
    for state in ("running", "finished", "failed"):
        window = progress_window(asker.root, state, tmp_path, monkeypatch)
        try:
            window.curve.redraw()
            asker.root.update()
            assert not problems_with_fit(asker.root, str(window.window)), state
            title = window.window.title()
            if state == "running":
                assert re.fullmatch(r"\d+% · \d+:\d\d left · Training mychar", title), title
            else:
                assert title == ("Finished" if state == "finished" else "Failed") + " · Training mychar"
                assert has_urgency_hint(window.window)  # the taskbar entry asks for attention
            photograph(window.window, display, SCREENSHOTS / f"progress-{state}-{theme}@{scale.name}.png")
        finally:
            window.close()


class ReplayedSession:
    """The trainer's stand-in for the progress window: it hands out the events it was given, then its result."""

    def __init__(self, args: Any, on_done: Callable[[TrainResult], None], echo: Any = None) -> None:
        self.on_done, self.events, self.result, self.stopping, self.done = on_done, [], None, False, False

    def poll(self) -> list:
        events, self.events = self.events, []
        if not events and self.result is not None and not self.done:
            self.done = True
            self.on_done(self.result)
        return events

    def stop(self) -> None:
        self.stopping = True

    def wait(self, timeout: float | None = None) -> bool:
        return True


def progress_window(root: tk.Tk, state: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> ProgressWindow:
    """The progress window after 80 of 200 steps, with two samples; then finished or failed."""
    from PIL import Image, ImageDraw

    monkeypatch.setattr(progress_window_module, "TrainingSession", ReplayedSession)
    samples = []
    for number, colour in enumerate(("#d04040", "#3070d0")):
        sample = folder / f"sample-{number}.png"
        image = Image.new("RGB", (64, 64), "#f0e8d8")
        ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=colour)
        image.save(sample)
        samples.append(sample)
    args = TrainArgs(output_dir=str(folder), output_name="mychar", sample_prompts=str(folder / "prompts.txt"))
    window = ProgressWindow(root, args, name="mychar")
    random = Random(0)
    events: list = [Started(total_steps=200, steps_per_epoch=20, epochs=10, num_train_images=40, num_reg_images=0,
                            device="cuda:0 (NVIDIA GeForce RTX 3060)")]
    for step in range(1, 81):
        loss = 0.09 + 0.06 * math.exp(-step / 25) + random.uniform(-0.03, 0.03)
        epoch = (step - 1) // 20 + 1
        events.append(Step(step=step, total_steps=200, epoch=epoch, epochs=10, loss=loss, average_loss=loss,
                           lr=1e-4, steps_per_second=1.6, elapsed_s=step / 1.6, eta_s=(200 - step) / 1.6))
        if step % 20 == 0:
            events += [EpochEnd(epoch=epoch, epochs=10, average_loss=loss),
                       SampleMade(path=str(samples[(step // 20) % 2]), prompt=f"mychar, prompt {(step // 20) % 2} "
                                  "--w 512 --h 512", step=step)]
    if state == "finished":
        steps = [event for event in events if isinstance(event, Step)]
        # the run's loss table and plot, as the trainer leaves them beside the LoRA
        write_loss_table(folder / "mychar-loss.csv", [LossRow(e.step, e.epoch, e.loss, e.lr) for e in steps])
        draw_loss_plot([e.step for e in steps], [e.loss for e in steps], folder / "mychar-loss.png",
                       title="Loss of mychar")
        events += [Saved(path=str(folder / "mychar.safetensors"), epoch=4, step=80, final=True),
                   Finished(lora_path=str(folder / "mychar.safetensors"), steps=80, epochs=4, elapsed_s=50.0,
                            stopped_early=True, loss_plot=str(folder / "mychar-loss.png"))]
        result = TrainResult(ok=True, lora_path=str(folder / "mychar.safetensors"), message="Stopped.", steps=80)
    elif state == "failed":
        events.append(Failed(message="The GPU ran out of memory at step 81.",
                             advice="Lower the batch size to 1 or turn on gradient checkpointing."))
        result = TrainResult(ok=False, lora_path=None, message="The GPU ran out of memory.")
    else:
        result = None
    window.session.events = events
    window.session.result = result
    deadline = time.monotonic() + 10
    while window.step_bar.cget("value") < 80 or (result is not None and not window.session.done):
        assert time.monotonic() < deadline, "the progress window did not show the events"
        root.update()
        time.sleep(0.02)
    root.update()
    return window


def photograph(window: tk.Toplevel, display: VirtualDisplay, path: Path) -> None:
    subprocess.run(["xdotool", "mousemove", "0", "0"], env=display.env, check=True, timeout=30)  # no hover
    subprocess.run(["import", "-window", str(int(window.wm_frame(), 16)), str(path)], env=display.env, check=True,
                   timeout=30, capture_output=True)


def test_the_smoothed_loss_is_the_weighted_mean_of_the_losses_so_far():
    """TensorBoard's bias-corrected smoothing: after n losses, sum(w^(n-i) (1-w) loss_i) / (1 - w^n)."""
    losses = [1.0, 0.5, 0.8, 0.2]
    average = BiasCorrectedAverage(0.9)
    shown = [average.add(loss) for loss in losses]
    assert shown[0] == pytest.approx(1.0)  # the first point is the first loss
    assert shown[1] == pytest.approx((0.9 * 1.0 + 0.5) / (0.9 + 1))  # weights 0.9 and 1, normalised
    weights = [0.9 ** (len(losses) - 1 - index) for index in range(len(losses))]
    assert shown[-1] == pytest.approx(sum(w * loss for w, loss in zip(weights, losses)) / sum(weights))


def test_every_real_question_fits_at_double_scaling(virtual_display):
    """The questions the wizard really asks, with their real help texts, at scaling 2.0 on a 1280x1024 screen."""
    asker = TkAsker(scaling=2.0)
    config = TrainConfig(cuda=False)
    try:
        for question in [q for flow in FLOWS.values() for q in flow]:
            found: list[str] = []
            inspect_then_close(asker, virtual_display, None, found)
            default = question.current(config) if question.current else (
                config.get(question.field) if question.field else None)
            asker.ask(question, default, can_go_back=True)
            assert not found, f"{question.id}: {found}"
    finally:
        asker.close()
        del asker
        gc.collect()


def test_the_fit_check_sees_a_dialog_taller_than_the_screen(virtual_display):
    asker = TkAsker(scaling=2.0)
    try:
        found: list[str] = []
        inspect_then_close(asker, virtual_display, None, found)
        asker.ask(Question("essay", "text", "Too long?", help=LONG_HELP * 12), "", can_go_back=False)
        assert any("more than the screen" in problem for problem in found)
    finally:
        asker.close()
        del asker
        gc.collect()
