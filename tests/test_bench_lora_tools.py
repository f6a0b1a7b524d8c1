"""The LoRA tools' benchmark, on the demo's tiny shapes (--small): both measurements run and report their figures."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import lora_tools  # noqa: E402  (benchmarks/ is not a package)


def test_the_small_benchmark_resizes_and_merges_in_fresh_processes_and_reports_time_and_memory(capsys):
    assert lora_tools.main(["--small", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    figures = re.findall(r"(resize|merge) .*: ([\d.]+) s, peak RSS (\d+) MiB \((-?\d+) MiB above the imports\)",
                         printed)
    assert [step for step, *_ in figures] == ["resize", "merge"], printed
    for _, seconds, peak, above in figures:
        assert float(seconds) > 0  # no upper bound: on a busy shared machine wall time says little
        assert 100 < int(peak) < 4096 and 0 <= int(above) < int(peak)  # torch alone holds more than 100 MiB
    assert "dim-16 tiny LoRA" in printed and "to dim 4" in printed
