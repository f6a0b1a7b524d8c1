"""What every tool's command line shares: a tqdm progress bar, and a user's mistake printed as one sentence.

Library functions take `progress(done, total, label)`; `tqdm_progress()` is the terminal's, a popup may pass its
own. Exit codes as the wizard's: 0 done, 1 failed, 2 a mistake in the options or files (one sentence on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sd_scripts.errors import UserFacingError

Progress = Callable[[int, int, str], None]
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def no_progress(done: int, total: int, label: str) -> None:
    """The progress callback that shows nothing."""


def tqdm_progress(description: str, unit: str = "module") -> Progress:
    """A progress callback drawing one tqdm bar on stderr, created at the first call (when the total is known)."""
    from tqdm import tqdm

    bar: list[Any] = []

    def update(done: int, total: int, label: str) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc=description, unit=unit, leave=True))
        bar[0].set_postfix_str(label[-40:], refresh=False)
        bar[0].update(done - bar[0].n)
        if done >= total:
            bar[0].close()

    return update


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None, run: Callable[[argparse.Namespace], Any]) \
        -> int:
    """Parse `argv` and call `run`; a UserFacingError becomes its sentence on stderr and exit code 2."""
    arguments = parser.parse_args(argv)
    try:
        run(arguments)
    except UserFacingError as problem:
        print(str(problem), file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK

