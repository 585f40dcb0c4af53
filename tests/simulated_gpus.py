"""Helpers for the NVML tests: a clock the test moves by hand."""

from __future__ import annotations


class ManualClock:
    """Shared by the simulated GPUs (physics) and the driver (backoffs): one time for both."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
