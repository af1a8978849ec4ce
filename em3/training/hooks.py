"""The trainer's callbacks and result records: Hooks, Progress and RunResult (see docs/ARCHITECTURE.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

PHASES = ("data", "cache", "train", "eval", "done")
STATUSES = ("FINISHED", "FAILED", "KILLED")


@dataclass(frozen=True)
class Progress:
    """One progress report; the dashboard and the CLI's tqdm bar render it."""

    phase: str                      # one of PHASES
    epoch: int = 0                  # 1-based epoch being trained (0 before training)
    epochs: int = 0
    step: int = 0                   # step within the epoch
    steps_per_epoch: int = 0
    samples_per_s: float = 0.0
    eta_s: float = 0.0              # estimated seconds left in the training phase
    loss: float = float("nan")
    message: str = ""


@dataclass
class Hooks:
    """Optional callbacks; every one may be None. `should_stop` is a cooperative cancel flag."""

    on_progress: Callable[[Progress], None] | None = None
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    should_stop: Callable[[], bool] | None = None

    def progress(self, p: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(p)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.on_epoch is not None:
            self.on_epoch(epoch, metrics)

    def stop_requested(self) -> bool:
        return bool(self.should_stop is not None and self.should_stop())


@dataclass
class RunResult:
    """What a training run returns: its MLflow run id, final status and metrics."""

    run_id: str
    status: str                                          # one of STATUSES
    metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    peak_memory_mb: float = 0.0
    error: str | None = None
