"""What the demo LoRA does to the demo model's sample, and how long the whole demo takes, as a user runs it.

Runs `popup_main.py --demo [sdxl]` in the console (the demo model is built first if `build/demo/` lacks it, and that
time is reported apart), then compares the first prompt's sample before training with the one after it: the mean
absolute change per pixel and channel, in 8-bit levels.

    python -m benchmarks.demo_effect [--family sd15|sdxl]

Target: a change a user sees at a glance, without flipping between the two pictures. The smallest step people tell
apart between two flat 8-bit colours is about 1-2% of the range (2-5 levels); 15 of 255 (6%), on average over every
pixel and channel of the whole picture, is several such steps everywhere (tests/test_demo_pretraining.py holds the
SD1.5 demo model to the same figure in the suite; the SDXL demo's model takes too long to build for the suite).
And the demo itself within 2 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

VISIBLE_CHANGE = 15.0  # of 255, see above
DEMO_SECONDS = 120.0


def mean_pixel_change(before: Path, after: Path) -> float:
    """The mean absolute difference of two pictures, per pixel and channel, in 8-bit levels (0 to 255)."""
    import numpy
    from PIL import Image

    first, second = (numpy.asarray(Image.open(path).convert("RGB"), dtype=float) for path in (before, after))
    return float(numpy.abs(second - first).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("sd15", "sdxl"), default="sd15")
    options = parser.parse_args(argv)
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        os.environ.pop(name, None)  # the console, as on a machine without a display

    import questions
    from sd_scripts.demo import build_demo
    from wizard import runner
    from wizard.app import main as wizard_main

    started = time.perf_counter()
    build_demo(runner.DEMO_BUILD_FOLDER, family=options.family)
    built = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        arguments = ["--demo", "sdxl", folder] if options.family == "sdxl" else ["--demo", folder]
        if wizard_main(arguments, questions.FLOWS) != 0:
            print("The demo failed.", file=sys.stderr)
            return 1
        trained = time.perf_counter()
        (run,) = Path(folder).iterdir()
        samples = sorted((run / "sample").glob("*_00_*.png"))  # the first prompt's, in the order they were made
        change = mean_pixel_change(samples[0], samples[-1])
    load = os.getloadavg()[0]
    print(f"demo {options.family}: model built in {built - started:.1f} s (0 when cached), the demo ran in "
          f"{trained - built:.1f} s; the LoRA moved the first prompt's sample by {change:.1f} of 255 per pixel "
          f"({samples[0].name} -> {samples[-1].name}); load average {load:.1f}")
    verdicts = [("visible change", change > VISIBLE_CHANGE), ("within 2 minutes", trained - built < DEMO_SECONDS)]
    print("; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in verdicts))
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
