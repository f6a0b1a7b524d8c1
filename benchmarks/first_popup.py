"""How long an artist waits for the first popup: `python popup_main.py` started N times on a virtual screen.

Measures, per launch, the time from starting the process to the first window being mapped (found by xdotool), and
prints the median and the maximum. It also runs the launch with `-X importtime` and fails if torch, diffusers,
transformers or accelerate are imported before the first popup (they belong to training only).

    .venv/bin/python benchmarks/first_popup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from xvfb import VirtualDisplay  # noqa: E402  (the test harness: its own Xvfb and xdotool helpers)

HEAVY = ("torch", "diffusers", "transformers", "accelerate")
FIRST_POPUP = "^LoRA Wizard - "


def launch_until_first_popup(display: VirtualDisplay, python_options: list[str]) -> tuple[float, str]:
    """Seconds from process start to the first mapped popup, and what the process wrote on stderr."""
    started = time.perf_counter()
    app = subprocess.Popen([sys.executable, *python_options, "popup_main.py"], cwd=ROOT, env=display.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        display.find_window(FIRST_POPUP, timeout=60)
        elapsed = time.perf_counter() - started
    finally:
        app.kill()
        _, stderr = app.communicate()
    return elapsed, stderr


def heavy_imports(importtime_log: str) -> list[str]:
    """Top-level packages from HEAVY that `-X importtime` saw imported."""
    seen = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            module = line.rsplit("|", 1)[1].strip()
            seen.add(module.split(".")[0])
    return sorted(seen & set(HEAVY))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--target", type=float, default=1.5, help="seconds the median must stay under")
    arguments = parser.parse_args()
    display = VirtualDisplay()
    try:
        times = [launch_until_first_popup(display, [])[0] for _ in range(arguments.runs)]
        _, importtime_log = launch_until_first_popup(display, ["-X", "importtime"])
    finally:
        display.stop()
    median, worst = statistics.median(times), max(times)
    print(f"first popup after {arguments.runs} launches: median {median:.2f} s, max {worst:.2f} s "
          f"(each: {', '.join(f'{t:.2f}' for t in times)})")
    heavy = heavy_imports(importtime_log)
    print(f"heavy libraries imported before the first popup: {', '.join(heavy) or 'none'}")
    return 0 if median < arguments.target and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
