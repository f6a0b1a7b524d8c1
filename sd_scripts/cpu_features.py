"""Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), read without importing torch.

bf16 autocast on a CPU is only worth offering where the instructions exist: there it roughly halves the time of the
U-Net's matrix products and convolutions; elsewhere oneDNN emulates bf16 and it is slower than fp32. The wizard asks
this before torch is imported, so it reads the kernel's CPU flags instead of asking torch.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # as Linux names them in /proc/cpuinfo


@cache
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU flags name AVX512-BF16 or AMX-BF16; False where they cannot be read (Windows, macOS)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return not BF16_FLAGS.isdisjoint(line.partition(":")[2].split())
    return False
