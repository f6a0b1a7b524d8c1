"""Train a LoRA: the public `train()` and the command line `python -m sd_scripts.train`.

`train()` never raises for a problem the user can fix: it reports a `Failed` event and returns
`TrainResult(ok=False, ...)` with one sentence and, where it helps, advice. Anything else is a bug: the traceback
goes to a log file in the output folder and the message says so. Either way the GPU memory is released and
accelerate's process-wide state reset before it returns, so the next run in the same process starts clean.

Command line:
    python -m sd_scripts.train --config_file run.toml [--dataset_config d.toml] [--any_kohya_name value ...]
Values given on the command line win over the file's. Heavy libraries are imported only when training starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import signal
import sys
import threading
import typing
from typing import Any

from sd_scripts.args import TrainArgs, flatten_sections, read_toml
from sd_scripts.errors import UserFacingError
from sd_scripts.events import Event, EventHandler, Failed, Finished, Saved, SampleMade, Started, Step, ignore_event
from sd_scripts.notices import quiet_library_notices
from sd_scripts.training.processes import launched_processes
from sd_scripts.training.result import TrainResult

__all__ = ["TrainResult", "train", "main"]

BUG_MESSAGE = "The training stopped on an unexpected error; this is a bug, please report it with the log file {log}."


def train(args: TrainArgs, on_event: EventHandler = ignore_event, stop: threading.Event | None = None) -> TrainResult:
    """Train a LoRA with `args`, reporting progress to `on_event`; set `stop` to end early with a usable LoRA."""
    try:
        from sd_scripts.saving.atomic import is_disk_full, unwritable_error
        from sd_scripts.training.failures import is_out_of_memory, out_of_memory_error, write_bug_report
        from sd_scripts.training.loop import TrainingSession

        try:
            return TrainingSession(args, on_event, stop or threading.Event()).run()
        except UserFacingError as error:
            return _failed(error, on_event)
        except Exception as error:  # noqa: BLE001 - the one place where every failure is turned into words
            if is_out_of_memory(error):  # while loading or caching: nothing was learned yet
                return _failed(out_of_memory_error(error, args), on_event)
            if is_disk_full(error):  # e.g. a latent cache or a log; the saves have their own sentence
                return _failed(unwritable_error(error.filename or args.output_dir, error), on_event)
            log = write_bug_report(error, args.output_dir)
            return _failed(UserFacingError(BUG_MESSAGE.format(log=log or "(could not be written)")), on_event)
    finally:
        release_memory()


def _failed(error: UserFacingError, on_event: EventHandler) -> TrainResult:
    """A failed result; one that failed while stepping names the LoRA it kept and the state to continue from."""
    on_event(Failed(error.message, error.advice))
    lora_path, resume_state = getattr(error, "lora_path", None), getattr(error, "resume_state", None)
    return TrainResult(ok=False, lora_path=str(lora_path) if lora_path else None, message=error.message,
                       advice=error.advice, resume_state=str(resume_state) if resume_state else None)


def release_memory() -> None:
    """Drop what the run left behind: cached GPU blocks and accelerate's process-wide state."""
    gc.collect()
    if "torch" not in sys.modules:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    from sd_scripts.training.precision import reset_accelerate_state

    reset_accelerate_state()


# --- command line ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """One option per TrainArgs field, under its kohya name; values are checked by TrainArgs.from_mapping."""
    parser = argparse.ArgumentParser(
        prog="python -m sd_scripts.train",
        description="Train a kohya-compatible LoRA for Stable Diffusion 1.x/2.x or SDXL (the family comes from the model).",
    )
    parser.add_argument("--config_file", help="an sd-scripts settings file (.toml); options given here win over it")
    hints = typing.get_type_hints(TrainArgs)
    for field in dataclasses.fields(TrainArgs):
        hint = hints[field.name]
        if hint is bool:
            # `--flag` alone means true, as in sd-scripts; `--flag false` is accepted too.
            parser.add_argument(f"--{field.name}", nargs="?", const="true", default=None)
        elif typing.get_origin(hint) is list:
            parser.add_argument(f"--{field.name}", nargs="*", default=None)
        else:
            parser.add_argument(f"--{field.name}", default=None)
    return parser


def args_from_command_line(argv: list[str]) -> tuple[TrainArgs, list[str]]:
    """TrainArgs from the config file (if any) overridden by the options; also the unknown keys of the file."""
    options = vars(build_parser().parse_args(argv))
    config_file = options.pop("config_file")
    values: dict[str, Any] = flatten_sections(read_toml(config_file)) if config_file else {}
    values.update({key: value for key, value in options.items() if value is not None})
    return TrainArgs.from_mapping(values, source=config_file or "the command line")


class ConsoleProgress:
    """Shows the events on the console: a tqdm bar for the steps, one line for everything else."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event: Event) -> None:
        from tqdm import tqdm

        if isinstance(event, Started):
            print(f"Training on {event.device}: {event.total_steps} steps in {event.epochs} epochs "
                  f"({event.num_train_images} training images, {event.num_reg_images} regularization images).")
            self.bar = tqdm(total=event.total_steps, unit="step", dynamic_ncols=True)
        elif isinstance(event, Step) and self.bar is not None:
            self.bar.update(event.step - self.bar.n)
            self.bar.set_postfix(epoch=f"{event.epoch}/{event.epochs}", loss=f"{event.loss:.4f}",
                                 avg=f"{event.average_loss:.4f}", lr=f"{event.lr:.2e}")
        elif isinstance(event, Saved):
            self.write(f"Saved {event.path}" + (f" and the state {event.state_dir}" if event.state_dir else ""))
        elif isinstance(event, SampleMade):
            self.write(f"Sample image {event.path}")
        elif isinstance(event, Finished):
            self.close()
            print(("Stopped early" if event.stopped_early else "Finished") + f" after {event.steps} steps: {event.lora_path}")
        elif isinstance(event, Failed):
            self.close()
            print(f"Training failed: {event.message}" + (f" {event.advice}" if event.advice else ""), file=sys.stderr)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def main(argv: list[str] | None = None) -> int:
    quiet_library_notices()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if launched_processes() == 1:
        return _train_from_command_line(argv)
    # Under `accelerate launch --num_processes N`: the main process trains the command line's settings, the others
    # train what its trainer announces (sd_scripts.training.processes).
    from sd_scripts.training.processes import dismiss_other_processes, follow_main_process, process_state

    if not process_state().is_main_process:
        return 0 if follow_main_process(train) else 1
    try:
        return _train_from_command_line(argv)
    finally:
        dismiss_other_processes()


def _train_from_command_line(argv: list[str] | None) -> int:
    try:
        args, unknown = args_from_command_line(sys.argv[1:] if argv is None else argv)
    except UserFacingError as error:
        print(error, file=sys.stderr)
        return 2
    if unknown:
        print(f"These settings are not used by this trainer and were ignored: {', '.join(sorted(unknown))}.",
              file=sys.stderr)
    stop = threading.Event()

    def stop_on_interrupt(signal_number: int, frame: Any) -> None:
        # The first Ctrl+C stops cleanly (LoRA and state saved); a second one ends the program at once.
        print("\nStopping after the current step; press Ctrl+C again to quit without saving.", file=sys.stderr)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous_handler = signal.signal(signal.SIGINT, stop_on_interrupt)
    try:
        result = train(args, on_event=ConsoleProgress(), stop=stop)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
