"""The GPU session's one prepared script (issue 14 item 3) works before a GPU session spends its minutes on it: on the
demo's tiny shapes it runs a check through the benchmark and prints the environment and the table row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_checks_run_on_tiny_shapes_and_print_every_figure():
    """A bench check, and the trainer's waits: on a CPU its steps run, the sync debug mode that counts needs CUDA."""
    printed = subprocess.run([sys.executable, "-m", "benchmarks.gpu_checks", "--tiny", "--only", "AdamW8bit", "waits"],
                             cwd=REPO, capture_output=True, text=True, check=True,
                             env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(Path.home())}).stdout
    assert printed.startswith("torch ") and "bitsandbytes installed" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| SD1.5 batch 1, checkpointing, AdamW8bit |")]
    assert len(rows) == 2  # as it comes, and in the closing table
    speed, share, memory, estimate, target = [cell.strip() for cell in rows[-1].split("|")[2:7]]
    assert speed.endswith("images/s") and float(speed.split()[0]) > 0
    assert memory.endswith("(process RSS)") and float(memory.split()[0]) > 0.1
    assert (share, estimate, target) == ("-", "-", "<= 6 GB")  # no GPU peak or estimate for the tiny shapes
    rows = [line for line in printed.splitlines() if line.startswith("| trainer waits for the GPU |")]
    assert len(rows) == 2 and rows[0] == rows[1]
    speed, share, waits, estimate, target = [cell.strip() for cell in rows[-1].split("|")[2:7]]
    assert speed.startswith("4 steps in ") and speed.endswith("(no CUDA: nothing to count)")
    assert (share, waits, estimate, target) == ("-", "0 waits: none", "-", "only the loss reads")
