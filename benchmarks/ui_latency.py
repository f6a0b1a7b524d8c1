"""How late Tk's event loop answers while the demo trains in the worker thread behind the progress window.

A timer asks Tk to call back every 10 ms and records how late each call comes; a late call is a window that does
not answer (clicks, redraws, the Stop button). The figures cover the whole run, from the window opening to the end;
as `wizard.runner` does, the trainer's libraries are imported before the window opens. Without a display on Linux it
starts its own Xvfb.

    python -m benchmarks.ui_latency [--steps 40] [--switch-interval-ms 5]

Target: p99 under 100 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICK_MS = 10


class LatencyProbe:
    """Schedules `after(TICK_MS)` callbacks back to back and keeps how late each one ran, in milliseconds."""

    def __init__(self, root) -> None:
        self.root = root
        self.late_ms: list[float] = []
        self._expected = time.perf_counter() + TICK_MS / 1000
        self._timer = root.after(TICK_MS, self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.late_ms.append(max(0.0, (now - self._expected) * 1000))
        self._expected = now + TICK_MS / 1000
        self._timer = self.root.after(TICK_MS, self._tick)

    def stop(self) -> None:
        self.root.after_cancel(self._timer)

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.late_ms)
        return {
            "ticks": len(ordered),
            "median_ms": statistics.median(ordered),
            "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "max_ms": ordered[-1],
        }


def start_xvfb() -> subprocess.Popen | None:
    """A virtual screen when Linux has none (DISPLAY then points at it); None when a display is already there."""
    if not sys.platform.startswith("linux") or os.environ.get("DISPLAY"):
        return None
    if shutil.which("Xvfb") is None:
        sys.exit("There is no display and no Xvfb to make one: install xvfb or run this on a desktop.")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten",
                               "tcp"], pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    with os.fdopen(read_end) as announced:
        os.environ["DISPLAY"] = ":" + announced.readline().strip()
    return server


def measure(steps: int, switch_interval_ms: float | None) -> dict[str, float]:
    import torch

    from sd_scripts.demo import build_demo
    from wizard.askers.tk_asker import TkAsker
    from wizard.progress_window import ProgressWindow
    from wizard.runner import DEMO_BUILD_FOLDER, demo_config
    from wizard.training_session import warm_up_trainer
    from wizard.translate import to_train_args

    warm_up_trainer().join()  # as wizard.runner does before it opens the window
    torch.set_num_threads(2)
    if switch_interval_ms is not None:
        sys.setswitchinterval(switch_interval_ms / 1000)
    demo = build_demo(DEMO_BUILD_FOLDER)
    with tempfile.TemporaryDirectory() as output:
        config = demo_config(demo, Path(output))
        config.set("max_steps", steps)
        config.set("sample_every_n_epochs", None)
        config.set("sample_every_n_steps", max(1, steps // 2))
        args = to_train_args(config)
        asker = TkAsker()
        window = ProgressWindow(asker.root, args, name="latency benchmark")
        probe = LatencyProbe(asker.root)
        started = time.perf_counter()
        result = window.run_until_done()
        seconds = time.perf_counter() - started
        probe.stop()
        window.close()
        asker.close()
    if not result.ok:
        sys.exit(f"The demo training failed: {result.message}")
    return probe.summary() | {"steps": result.steps, "run_s": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ui_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps of the demo (default 40)")
    parser.add_argument("--switch-interval-ms", type=float, default=None,
                        help="set sys.setswitchinterval for the run (Python's default is 5 ms)")
    options = parser.parse_args(argv)
    server = start_xvfb()
    try:
        figures = measure(options.steps, options.switch_interval_ms)
    finally:
        if server is not None:
            server.terminate()
    switch = options.switch_interval_ms if options.switch_interval_ms is not None else "default (5)"
    print(f"Tk event-loop lateness over {figures['run_s']:.1f} s of demo training ({figures['steps']} steps, "
          f"{figures['ticks']} ticks of {TICK_MS} ms, switch interval {switch} ms, {os.cpu_count()} cores):")
    print(f"  median {figures['median_ms']:.1f} ms   p99 {figures['p99_ms']:.1f} ms   max {figures['max_ms']:.1f} ms")
    return 0 if figures["p99_ms"] < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
