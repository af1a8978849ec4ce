"""Peak memory of one run: the CUDA allocator's peak, or the process's resident set sampled during the run.

`resource.getrusage(...).ru_maxrss` is the process's lifetime peak, so an in-process run (a
dashboard job, `ablate`, a bench) would report the largest earlier run; sampling the RSS from
the run's start gives the run's own peak (of the whole process, including what was resident
before it started).
"""
from __future__ import annotations

import threading
import time

import torch


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class PeakMemory:
    """Context manager; `.mb` is the peak while it was open, `.kind` says what was measured."""

    def __init__(self, device: torch.device, *, interval_s: float = 0.05):
        self.device = device
        self.interval_s = interval_s
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_rss_sampled"
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._peak = _rss_mb()
            self._thread = threading.Thread(target=self._sample, name="em3-rss-sampler", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, _rss_mb())

    @property
    def mb(self) -> float:
        """Peak so far (MiB)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return max(self._peak, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
