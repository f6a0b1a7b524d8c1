"""The command line of `popup_main.py`: popups by default, or straight from saved settings, a queue, the demo, a tool.

With no option the first popup asks what to do: train a LoRA, run a queue of saved settings, try the demo, or one of
the side tools that are registered. That choice steers this session only; it is kept here, not in the settings.

Exit codes: 0 done, 1 cancelled or the training failed, 2 a mistake on the command line (one sentence on stderr).
The imports stay light: nothing here loads torch, so the first popup appears at once; the trainer is imported only
when training starts (`wizard.runner`, lazily).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from sd_scripts.errors import UserFacingError
from sd_scripts.notices import quiet_library_notices
from sd_scripts.training.processes import launched_processes
from wizard.askers.base import Asker, ReportAction
from wizard.askers.console import ConsoleAsker
from wizard.config import TrainConfig
from wizard.formats import settings_file
from wizard.graph import review, walk
from wizard.question import BACK, CANCEL, Dropped, Question
from wizard.queue import QueuePosition, RunResult, run_queue

EXIT_OK = 0
EXIT_FAILED = 1  # cancelled, or the training failed
EXIT_USAGE = 2  # a wrong argument or path

WHAT_TO_DO_ID = "what_to_do"
# The entries of the "what_to_do" flow the app always offers; a side tool's entry only when the tool is registered.
BUILT_IN_CHOICES = ("train", "retrain", "queue", "demo")


class Train(Protocol):
    """Trains one config; in a queue, `run_position` is (this run's number, how many runs) for the progress display."""

    def __call__(self, config: TrainConfig, asker: Asker, *,
                 run_position: QueuePosition | None = None) -> RunResult: ...


class Demo(Protocol):
    """Trains the built-in demo of `family` ("sd15" or "sdxl") into `folder` (None: a new folder under output/)."""

    def __call__(self, folder: str | None, family: str = "sd15") -> RunResult: ...


DEMO_FAMILIES = ("sd15", "sdxl")


class Tool(Protocol):
    """A side tool: `argv` are the options after `--tool NAME` (none: its popups, asked with `asker` when given)."""

    def __call__(self, argv: list[str], asker: Asker | None = None) -> int: ...


Preflight = Callable[[TrainConfig, Asker], ReportAction]  # the report before training: "start", "back" or "cancel"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="popup_main.py",
        description="Train a LoRA for Stable Diffusion by answering a few popups. With no option the popups open.",
    )
    parser.add_argument("--load-json", metavar="FILE",
                        help="load saved settings first: the wizard's JSON, a Kohya_ss GUI JSON or an sd-scripts "
                             "TOML (told apart by their content); the popups skip every setting the file holds")
    parser.add_argument("--from-lora", metavar="FILE",
                        help="train again like this LoRA: its settings come from its ss_* metadata, the popups ask "
                             "the rest (the base model, the folders that are not found)")
    parser.add_argument("--no-popups", action="store_true",
                        help="ask nothing: train straight from --load-json FILE, or run --queue DIR")
    parser.add_argument("--queue", metavar="DIR",
                        help="train every .json and .toml settings file of DIR in name order; finished ones move to "
                             "DIR/complete, failed ones to DIR/failed with the reason")
    parser.add_argument("--demo", nargs="*", metavar="sdxl|FOLDER",
                        help="train the built-in tiny demo LoRA to check the installation: --demo (SD 1.5), --demo "
                             "sdxl (the SDXL one), either followed by a FOLDER to train into")
    parser.add_argument("--tool", metavar="NAME",
                        help="run a side tool; the options after it go to the tool")
    parser.add_argument("--console", action="store_true",
                        help="ask the questions in this terminal instead of popups")
    parser.add_argument("--theme", choices=("light", "dark", "system"), default="system",
                        help="the popups' colours: light, dark, or as the system is set (the default)")
    return parser


def main(
    argv: Sequence[str],
    flows: Mapping[str, Sequence[Question]],
    *,
    tools: Mapping[str, Tool] | None = None,
    train: Train | None = None,
    demo: Demo | None = None,
    asker: Asker | None = None,
    preflight: Preflight | None = None,
) -> int:
    """Run the wizard for `argv`; returns the exit code.

    `train`, `demo`, `asker` and `preflight` default to the real trainer, demo, popups and pre-flight report; tests
    hand in their own. Under `accelerate launch --num_processes N` only the main process shows the wizard; the
    others train each run its trainer starts, silently (`sd_scripts.training.processes`).
    """
    quiet_library_notices()
    if launched_processes() == 1:
        return _run_wizard(argv, flows, tools=tools, train=train, demo=demo, asker=asker, preflight=preflight)
    import sd_scripts.train
    from sd_scripts.training.processes import dismiss_other_processes, follow_main_process, process_state

    if not process_state().is_main_process:  # shows nothing: it trains what the main process's trainer announces
        return EXIT_OK if follow_main_process(sd_scripts.train.train) else EXIT_FAILED
    try:
        return _run_wizard(argv, flows, tools=tools, train=train, demo=demo, asker=asker, preflight=preflight)
    finally:
        dismiss_other_processes()


def _run_wizard(
    argv: Sequence[str],
    flows: Mapping[str, Sequence[Question]],
    *,
    tools: Mapping[str, Tool] | None,
    train: Train | None,
    demo: Demo | None,
    asker: Asker | None,
    preflight: Preflight | None,
) -> int:
    """`main` in one process (or the main one of several)."""
    parser = build_parser()
    argv, tool_argv = _split_at_tool(list(argv))
    arguments, rest = parser.parse_known_args(argv)
    rest += tool_argv
    tools = tools or {}
    if rest and arguments.tool is None:
        return _usage_error(f"Unknown option {rest[0]}; run popup_main.py --help to see the options.")
    try:
        if arguments.tool is not None:
            if arguments.tool not in tools:
                available = ", ".join(sorted(tools)) or "none yet"
                return _usage_error(f"There is no tool named {arguments.tool!r}; the tools are: {available}.")
            if rest:
                return tools[arguments.tool](rest)
            return tools[arguments.tool]([], asker=asker or choose_asker(force_console=arguments.console))
        if arguments.demo is not None:
            family, folder = _demo_arguments(arguments.demo)
            return _exit_code((demo or _real_demo)(folder, family))
        problem = _check_arguments(arguments)
        if problem is not None:
            return _usage_error(problem)
        train = train or _real_train
        if arguments.no_popups:
            return _run_without_popups(arguments, train)
        asker = asker or choose_asker(force_console=arguments.console, theme=arguments.theme)
        return run_popups(flows, asker, train=train, demo=demo, tools=tools, preflight=preflight or _real_preflight,
                          load_json=arguments.load_json or arguments.from_lora, queue=arguments.queue)
    except UserFacingError as problem:
        print(str(problem), file=sys.stderr)
        return EXIT_USAGE


def _split_at_tool(argv: list[str]) -> tuple[list[str], list[str]]:
    """The app's options, and everything after `--tool NAME`: the tool's own (its --help included)."""
    if "--tool" not in argv:
        return argv, []
    end = argv.index("--tool") + 2
    return argv[:end], argv[end:]


def run_popups(
    flows: Mapping[str, Sequence[Question]],
    asker: Asker,
    *,
    train: Train,
    demo: Demo | None = None,
    tools: Mapping[str, Tool] | None = None,
    preflight: Preflight | None = None,
    load_json: str | None = None,
    queue: str | None = None,
) -> int:
    """The guided session: what to do, then for a training the starter questions, the training questions, the
    summary, and the training. `--queue` and `--load-json` (or `--from-lora`) have already said what to do, so they
    skip the first popup, as a settings file dropped on it does. "Train again like a LoRA" asks for the LoRA instead
    of the starter questions.
    """
    if queue is not None:
        return _run_queue(queue, train, asker)
    if load_json is not None:
        return _guided_training(flows, _load(load_json, TrainConfig(), asker), asker, train, preflight)
    tools = tools or {}
    choice = ask_what_to_do(flows["what_to_do"], tools, asker)
    while isinstance(choice, Dropped):  # a settings file dropped on the first popup: as --load-json
        try:
            config = _load(_settings_file(choice.path), TrainConfig(), asker)
        except UserFacingError as problem:
            asker.error("Could not load the settings", str(problem))
            choice = ask_what_to_do(flows["what_to_do"], tools, asker)
            continue
        return _guided_training(flows, config, asker, train, preflight)
    if choice is None:
        return EXIT_FAILED
    if choice == "queue":
        config = TrainConfig()
        if walk(flows["queue"], config, asker) == "cancelled":
            return EXIT_FAILED
        return _run_queue(config.get("multi_run_folder"), train, asker)
    if choice == "demo":
        return _exit_code((demo or _real_demo)(None))
    if choice in tools:
        return tools[choice]([], asker=asker)

    config = TrainConfig()
    if walk(flows["retrain" if choice == "retrain" else "start"], config, asker) == "cancelled":
        return EXIT_FAILED
    if config.get("load_json_path") is not None:
        try:
            config = _load(config.get("load_json_path"), config, asker)
        except UserFacingError as problem:
            asker.error("Could not load the settings", str(problem))
            return EXIT_FAILED
    return _guided_training(flows, config, asker, train, preflight)


def ask_what_to_do(choices: Sequence[Question], tools: Mapping[str, Tool], asker: Asker) -> str | Dropped | None:
    """The first popup: the id of the chosen entry ("train", "queue", "demo" or a tool's name), a settings file
    dropped on it, or None to quit.

    The built-in entries are always offered; a side tool is offered when it is registered, with its entry's label
    or, for a tool no entry describes, with its name. Closing the popup (Escape, the close button) leaves at once:
    nothing has been answered yet, so nothing would be lost by it.
    """
    declared = {entry.id: entry for entry in choices}
    offered = [declared[name] for name in BUILT_IN_CHOICES]
    for name in tools:
        offered.append(declared.get(name) or Question(id=name, kind="info", text=f"The {name} tool",
                                                      help=f"the side tool also started with --tool {name}."))
    by_label = {entry.text: entry.id for entry in offered}
    question = Question(
        id=WHAT_TO_DO_ID, kind="choice", text="What would you like to do?", choices=tuple(by_label),
        help="\n".join(f"{entry.text}: {entry.help}" for entry in offered), extensions=settings_file.EXTENSIONS,
    )
    error: str | None = None
    while True:
        answer = asker.ask(question, question.choices[0], can_go_back=False, error=error)
        error = None
        if answer is CANCEL:
            return None
        if isinstance(answer, Dropped):
            return answer
        if answer in by_label:
            return by_label[answer]
        if answer is not BACK:
            error = f"Choose one of: {', '.join(question.choices)}."


def _guided_training(flows: Mapping[str, Sequence[Question]], config: TrainConfig, asker: Asker, train: Train,
                     preflight: Preflight | None) -> int:
    """The training questions, the summary with Edit / Save / Start, the settings file if asked, the pre-flight
    report (Back returns to the summary), then training."""
    saver = _JsonSaver()
    if walk(flows["train"], config, asker) == "cancelled":
        return EXIT_FAILED
    while True:
        if review(flows["train"], config, asker, save_json=saver.save) == "cancel":
            return EXIT_FAILED
        if config.get("save_json_folder") is not None and not saver.has_saved(config):
            try:
                asker.info("Settings saved", f"Your settings were saved to {saver.save(config)}.")
            except (UserFacingError, OSError) as problem:
                asker.error("Could not save the settings", str(problem))
        if config.get("save_json_only"):
            return EXIT_OK
        decision = preflight(config, asker) if preflight is not None else "start"
        if decision == "start":
            return _exit_code(train(config, asker))
        if decision == "cancel":
            return EXIT_FAILED


def choose_asker(force_console: bool = False, theme: str = "system") -> Asker:
    """Popups when a display is there, else questions in the terminal (with a word on why)."""
    if not force_console:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            print("No display was found, so the questions are asked here in the terminal.", file=sys.stderr)
        else:
            try:
                from wizard.askers.tk_asker import TkAsker

                return TkAsker(theme=theme)
            except Exception as problem:  # no tkinter, or Tk cannot open the display: the terminal still works
                print(f"The popups cannot open ({problem}), so the questions are asked here in the terminal.",
                      file=sys.stderr)
    return ConsoleAsker()


# --- helpers ------------------------------------------------------------------------------------------------------


class _JsonSaver:
    """Saves settings into their save_json_folder, as JSON or sd-scripts TOML (settings_format), and remembers what
    it saved, so Start does not save twice."""

    def __init__(self) -> None:
        self._last_saved: dict[str, Any] | None = None

    def save(self, config: TrainConfig) -> Path:
        path = settings_file.save(config)
        self._last_saved = config.to_dict()
        return path

    def has_saved(self, config: TrainConfig) -> bool:
        return self._last_saved == config.to_dict()


def _check_arguments(arguments: argparse.Namespace) -> str | None:
    """One sentence about the first wrong argument, or None."""
    if arguments.load_json is not None and not Path(arguments.load_json).is_file():
        return f"The settings file {arguments.load_json} does not exist; check the path after --load-json."
    if arguments.from_lora is not None and not Path(arguments.from_lora).is_file():
        return f"The LoRA file {arguments.from_lora} does not exist; check the path after --from-lora."
    if arguments.from_lora is not None and (arguments.load_json is not None or arguments.queue is not None):
        return "Use --from-lora alone: it loads the LoRA's settings itself, as --load-json and --queue load theirs."
    if arguments.queue is not None and not Path(arguments.queue).is_dir():
        return f"The queue folder {arguments.queue} does not exist; check the path after --queue."
    if arguments.load_json is not None and arguments.queue is not None:
        return "Use either --load-json or --queue, not both; a queue loads each of its files itself."
    if arguments.no_popups and arguments.load_json is None and arguments.queue is None and arguments.from_lora is None:
        return "--no-popups needs settings to run from: add --load-json FILE, --from-lora FILE or --queue DIR."
    return None


def _run_without_popups(arguments: argparse.Namespace, train: Train) -> int:
    asker = ConsoleAsker()
    if arguments.queue is not None:
        return _run_queue(arguments.queue, train, asker)
    config, warnings = settings_file.load(arguments.load_json or arguments.from_lora)
    for warning in warnings:
        print(warning, file=sys.stderr)
    return _exit_code(train(config, asker))


def _run_queue(folder: str, train: Train, asker: Asker) -> int:
    """Train every JSON of `folder` in this process, then show the summary (also saved in the folder)."""

    def run_one(config: TrainConfig, *, position: QueuePosition) -> RunResult:
        return train(config, asker, run_position=position)

    try:
        summary = run_queue(folder, run_one, report=print)
    except UserFacingError as problem:  # another queue holds the folder: said in a popup, not only on the console
        asker.error("The queue did not start", str(problem))
        return EXIT_USAGE
    saved = f"\n\nThis summary is also saved as {summary.summary_file}." if summary.summary_file else ""
    asker.info("Queue stopped" if summary.of("stopped") else "Queue finished", summary.text() + saved)
    return EXIT_OK if not summary.failed else EXIT_FAILED


def _load(path: str, into: TrainConfig, asker: Asker) -> TrainConfig:
    config, warnings = settings_file.load(path, into=into)
    if warnings:
        asker.info("Settings loaded", "\n".join(warnings))
    return config


def _settings_file(path: str) -> str:
    """`path` when its name says it is a settings file or a LoRA; the content is checked when it is loaded."""
    if Path(path).suffix.lower().lstrip(".") not in settings_file.EXTENSIONS:
        raise UserFacingError(f"{Path(path).name} is not a settings file; drop a settings .json or .toml file, or a "
                              "LoRA .safetensors, to train with its settings.")
    return path


def _exit_code(result: RunResult) -> int:
    return EXIT_OK if result.ok else EXIT_FAILED


def _usage_error(sentence: str) -> int:
    print(sentence, file=sys.stderr)
    return EXIT_USAGE


def _real_train(config: TrainConfig, asker: Asker, *, run_position: QueuePosition | None = None) -> RunResult:
    from wizard.runner import train_config

    return train_config(config, asker, run_position=run_position)


def _real_preflight(config: TrainConfig, asker: Asker) -> ReportAction:
    from wizard.preflight import confirm_preflight
    from wizard.training_session import warm_up_trainer

    warm_up_trainer()  # the trainer's libraries load while the report is read, not while the progress window runs
    return confirm_preflight(config, asker)


def _demo_arguments(values: list[str]) -> tuple[str, str | None]:
    """--demo [sd15|sdxl] [FOLDER] -> (family, folder); a first value that names no family is the folder."""
    family = values[0].lower() if values and values[0].lower() in DEMO_FAMILIES else "sd15"
    rest = values[1:] if values and values[0].lower() in DEMO_FAMILIES else values
    if len(rest) > 1:
        raise UserFacingError(f"--demo takes a family (sdxl) and one folder, not {' '.join(values)}; for example "
                              "--demo sdxl output/demo.")
    return family, rest[0] if rest else None


def _real_demo(output_dir: str | None, family: str = "sd15") -> RunResult:
    from wizard.runner import run_demo

    return run_demo(output_dir, family)
