"""Runs a finished TrainConfig on the trainer, and the built-in demo.

The wizard's last step: the settings are translated to the trainer's (kohya) names through the one table in
`wizard.translate`, the tag list is written, and `sd_scripts.train` runs in this process. With Tk popups it runs in a
worker thread under the progress window (`wizard.progress_window`); without, in this thread with a console bar.
Imported only when training starts: this is where torch gets loaded.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from sd_scripts.args import TrainArgs
from sd_scripts.dataset import DatasetSettings, scan_dataset
from sd_scripts.demo import DemoPaths, build_demo
from sd_scripts.errors import UserFacingError
from sd_scripts.events import Event, EventHandler, SampleMade
from sd_scripts.train import ConsoleProgress, train
from sd_scripts.training.result import TrainResult
from sd_scripts.untrusted import shown
from wizard.askers.base import Asker
from wizard.config import TrainConfig
from wizard.formats import seed_json
from wizard.tag_list import write_tag_list
from wizard.translate import to_train_args

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_BUILD_FOLDER = PROJECT_ROOT / "build" / "demo"

# The demo's settings: small and fast enough for a CPU, and strong enough for the LoRA to show in the samples.
DEMO_SETTINGS: dict[str, Any] = {
    "change_output_name": "demo_lora",
    "net_dim": 8,
    "alpha": 8.0,
    "optimizer_type": "AdamW",
    "learning_rate": 1e-3,
    "scheduler": "constant",
    "train_resolution": 64,
    "buckets": False,
    "batch_size": 2,
    "num_epochs": 4,
    "mixed_precision": "no",
    "gradient_checkpointing": False,  # the tiny model fits anywhere; the SDXL default would make its steps 2-4x slower
    "save_precision": "fp16",
    "cache_latents": True,
    "sample_sampler": "ddim",
    "sample_every_n_epochs": 4,
    "test_seed": 23,
    "tag_occurrence_txt_file": True,
}
# The SDXL demo's LoRA also trains the U-Net's 3x3 convolutions (kohya's LoRA with conv_dim: LoCon). At the demo's
# 64 px, SDXL's layout has attention, all that a plain LoRA trains, only at its 4x4 and 2x2 latent levels, while the
# 8x8 level's convolutions draw the tiny base model's picture: bypassing every attention block moves its sample by
# 3/255 per pixel (the SD1.5 demo model's by 15/255), so a plain LoRA could barely change it. Its rate, 5e-3, is the
# one of 1e-3, 2e-3, 3e-3 and 5e-3 that moves the sample as much as the SD1.5 demo's LoRA does (README, "What the demo
# does").
SDXL_DEMO_SETTINGS: dict[str, Any] = {"network_type": "LoCon", "conv_dim": 8, "conv_alpha": 8.0, "learning_rate": 5e-3}


def train_config(config: TrainConfig, asker: Asker | None = None, *,
                 run_position: tuple[int, int] | None = None) -> TrainResult:
    """Train one config: in the progress window when the asker shows Tk popups, else with a console progress bar.

    `run_position` is (this run, runs in all) when a queue runs it: the window says "run i of n", closes by itself at
    the end and leaves the outcome to the queue's summary.
    """
    return _run(config, asker, on_event=ConsoleProgress(), run_position=run_position)


def run_demo(output_folder: str | None = None, family: str = "sd15") -> TrainResult:
    """Build the demo model of `family` ("sd15" or "sdxl") and its images (once), then train the demo LoRA into a
    new folder and say where it is. The SDXL demo trains with the settings the wizard gives an SDXL model (U-Net only,
    cached text-encoder outputs), at the demo's small size, as a LoCon (see SDXL_DEMO_SETTINGS).

    With a display the progress window shows the run (and the console its bar); without one it runs in the terminal.
    """
    print(f"Preparing the built-in {'SDXL ' if family == 'sdxl' else ''}demo model and images...")
    demo = build_demo(DEMO_BUILD_FOLDER, family=family)
    run_folder = _new_folder(Path(output_folder) if output_folder else PROJECT_ROOT / "output",
                             "demo-sdxl" if family == "sdxl" else "demo")
    config = demo_config(demo, run_folder, family)
    json_path = seed_json.save(config, run_folder, name="demo")

    samples: list[SampleMade] = []
    progress = ConsoleProgress()

    def on_event(event: Event) -> None:
        progress(event)
        if isinstance(event, SampleMade):
            samples.append(event)

    asker = _popup_asker_if_display()
    try:
        result = _run(config, asker, on_event=on_event, sample_before_training=True)
    finally:
        if asker is not None:
            asker.close()
    if not result.ok:
        return result
    comparison = _before_after(samples, run_folder / "before_after.png")
    print(f"\nThe demo LoRA is trained. Everything is in {run_folder}:")
    print(f"  LoRA:               {result.lora_path}")
    print(f"  settings (JSON):    {json_path}  (load it with --load-json to train it again or edit it)")
    for tags in sorted(run_folder.glob("*.txt")):
        print(f"  tag list:           {tags}")
    for loss in sorted(run_folder.glob("*-loss.*")):
        print(f"  loss of each step:  {loss}")
    if comparison is not None:
        print(f"  before/after image: {comparison}")
    return result


def demo_config(demo: DemoPaths, run_folder: Path, family: str = "sd15") -> TrainConfig:
    """The demo's settings for the built demo model of `family` and its images, training into `run_folder`."""
    config = TrainConfig()
    for name, value in {**DEMO_SETTINGS, **(SDXL_DEMO_SETTINGS if family == "sdxl" else {})}.items():
        config.set(name, value)
    config.set("base_model", str(demo.model))
    config.set("img_folder", str(demo.images))
    config.set("output_folder", str(run_folder))
    config.set("sample_prompts", str(demo.prompts))
    return config


def _run(config: TrainConfig, asker: Asker | None, *, on_event: EventHandler, sample_before_training: bool = False,
         run_position: tuple[int, int] | None = None) -> TrainResult:
    """Translate, write the tag list, train; a problem with the settings becomes a failed result, not a traceback."""
    try:
        args = to_train_args(config)
        args.sample_at_first = sample_before_training or args.sample_at_first
        if config.get("tag_occurrence_txt_file"):
            _write_tag_list(config, args)
    except UserFacingError as problem:
        print(f"Training could not start: {problem}", file=sys.stderr)
        result = TrainResult(ok=False, lora_path=None, message=problem.message, advice=problem.advice)
        if asker is not None:
            _tell_outcome(result, asker)
        return result
    root = getattr(asker, "root", None)  # only the TkAsker has one: the popups' Tk root
    if root is not None:
        return _train_in_window(root, args, asker, name=config.get("change_output_name") or "last",
                                on_event=on_event, run_position=run_position)
    stop = threading.Event()
    with _stop_on_ctrl_c(stop.set):
        result = train(args, on_event=on_event, stop=stop)
    if asker is not None:
        _tell_outcome(result, asker)
    return result


def _train_in_window(root: Any, args: TrainArgs, asker: Asker, *, name: str, on_event: EventHandler,
                     run_position: tuple[int, int] | None) -> TrainResult:
    """Train in a worker thread while the progress window shows it; the console bar is fed from the window too.

    The trainer's libraries are imported before the window opens (at once when the pre-flight report already started
    it): imported by the worker, they would hold Python's GIL for up to 250 ms at a time while the window runs.
    """
    from wizard.progress_window import ProgressWindow
    from wizard.training_session import warm_up_trainer

    warm_up_trainer().join()
    window = ProgressWindow(root, args, name=name, run_position=run_position, echo=on_event)
    with _stop_on_ctrl_c(window.session.stop):
        result = window.run_until_done()
    if run_position is not None:  # a queue goes on by itself; its summary tells every outcome at the end
        window.close()
        return result
    _tell_outcome(result, asker)
    window.wait_until_closed()
    return result


def _write_tag_list(config: TrainConfig, args: Any) -> Path:
    plan = scan_dataset(DatasetSettings.from_train_args(args))
    name = config.get("change_output_name") or "last"
    return write_tag_list(
        plan,
        Path(config.get("output_folder")) / f"{name}.txt",
        lora_name=name,
        alphabetical=config.get("sort_tag_occurrence_alphabetically"),
        weighted_by_repeats=config.get("tag_occurrence_weighted_by_repeats"),
    )


class _stop_on_ctrl_c:
    """In the main thread, the first Ctrl+C asks the trainer to stop (it saves what it learned); a second one quits."""

    def __init__(self, request_stop: Callable[[], None]) -> None:
        self.request_stop = request_stop
        self.previous: Any = None

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signal_number: int, frame: Any) -> None:
        print("\nStopping after this step and saving what was learned; press Ctrl+C again to quit at once.",
              file=sys.stderr)
        self.request_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _tell_outcome(result: TrainResult, asker: Asker) -> None:
    """One popup at the end: the file, its size and how to use it; or the failure in a sentence with its advice."""
    if result.ok and result.lora_path:
        asker.info("Training finished", outcome_text(result))
    else:
        asker.error("Training failed", result.message + (f" {result.advice}" if result.advice else ""))


def outcome_text(result: TrainResult) -> str:
    """What a finished (or stopped) run made and what to do with it."""
    path = Path(result.lora_path)
    trigger = _trigger_word(path)
    use = f"put its trigger word \u201c{trigger}\u201d in your prompt" if trigger else \
        "use the words of your captions in your prompt"
    return (f"{result.message}\n\nThe file is {_size_text(path.stat().st_size)}. To use it, copy it into the "
            f"models/Lora folder of A1111 or Forge, or models/loras of ComfyUI, and {use}.")


def _trigger_word(lora: Path) -> str | None:
    """The tag most of the captions share, read from the LoRA's own metadata (ss_tag_frequency); None if unknown."""
    if lora.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(lora), framework="pt") as handle:
        frequency = json.loads((handle.metadata() or {}).get("ss_tag_frequency", "{}"))
    totals: dict[str, int] = {}
    for folder in frequency.values():
        for tag, count in folder.items():
            totals[tag] = totals.get(tag, 0) + count
    return shown(max(totals, key=totals.get)) if totals else None  # caption text, shown escaped and short


def _size_text(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{max(1, round(size / 1e3))} KB"


def _popup_asker_if_display() -> Any:
    """A TkAsker (for its root and popups) when a screen is there; None in a terminal without one."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    try:
        from wizard.askers.tk_asker import TkAsker

        return TkAsker()
    except Exception as problem:  # no tkinter, or Tk cannot open the display: the console still works
        print(f"The progress window cannot open ({problem}), so the progress is shown here.", file=sys.stderr)
        return None


def _new_folder(parent: Path, prefix: str) -> Path:
    """A folder no earlier run used: `<prefix>-<date>-<time>`, with a number added if that exists too."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, number = parent / f"{prefix}-{stamp}", 1
    while folder.exists():
        number += 1
        folder = parent / f"{prefix}-{stamp}-{number}"
    folder.mkdir(parents=True)
    return folder


def _before_after(samples: list[SampleMade], path: Path) -> Path | None:
    """Put the first prompt's sample before training beside the one after it, labelled, in one image."""
    from PIL import Image, ImageDraw

    first_prompt = [sample for sample in samples if sample.prompt == samples[0].prompt] if samples else []
    if len(first_prompt) < 2:
        return None
    before, after = Image.open(first_prompt[0].path), Image.open(first_prompt[-1].path)
    scale = max(1, 256 // before.width)
    width, height = before.width * scale, before.height * scale
    canvas = Image.new("RGB", (width * 2 + 30, height + 40), "white")
    canvas.paste(before.convert("RGB").resize((width, height), Image.NEAREST), (10, 30))
    canvas.paste(after.convert("RGB").resize((width, height), Image.NEAREST), (width + 20, 30))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 8), "before training", fill="black")
    draw.text((width + 20, 8), "with the demo LoRA", fill="black")
    partial = path.with_name(path.name + ".partial")
    canvas.save(partial, format="PNG")
    partial.replace(path)
    return path
