"""Speed and time-left figures for the Step events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class StepClock:
    """Measures steps per second from the first step of this run on; a resumed run starts counting again."""

    total_steps: int
    first_step: int = 0  # steps already done when the clock started (a resumed run)
    started_at: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started_at

    def steps_per_second(self, step: int) -> float:
        elapsed = self.elapsed()
        return (step - self.first_step) / elapsed if elapsed > 0 else 0.0

    def eta(self, step: int) -> float:
        speed = self.steps_per_second(step)
        return (self.total_steps - step) / speed if speed > 0 else 0.0


@dataclass
class LossAverage:
    """The running mean of the step losses within one epoch."""

    total: float = 0.0
    count: int = 0

    def add(self, loss: float) -> float:
        self.total += loss
        self.count += 1
        return self.mean()

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0
