"""The trainer's callbacks and result records: Hooks, Progress and RunResult (see docs/ARCHITECTURE.md).

Cancel is cooperative everywhere: `fit` reads `should_stop` before each step and ends the run
KILLED with the best weights; outside the loop (feature cache, evaluation, explain artifacts) a
progress report raises `Cancelled` once a stop was requested, and run_training's interrupt
handling marks the run KILLED.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

PHASES = ("data", "cache", "train", "eval", "explain", "done")
CANCELLABLE_PHASES = ("cache", "eval", "explain")   # "train": fit's own check; "data": before anything to stop
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
    run_id: str = ""                # the MLflow run, once it exists (the dashboard lists it while it trains)


class Cancelled(KeyboardInterrupt):
    """A stop requested through Hooks.should_stop, raised outside the fit loop; an interrupt, so the run ends KILLED."""


@dataclass
class Hooks:
    """Optional callbacks; every one may be None. `should_stop` is a cooperative cancel flag."""

    on_progress: Callable[[Progress], None] | None = None
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    should_stop: Callable[[], bool] | None = None

    def progress(self, p: Progress) -> None:
        """Report p; in a cancellable phase, then raise Cancelled if a stop was requested."""
        if self.on_progress is not None:
            self.on_progress(p)
        if p.phase in CANCELLABLE_PHASES and self.stop_requested():
            raise Cancelled(f"cancelled during {p.phase}" + (f" ({p.message})" if p.message else ""))

    def cache_batch(self, done: int, total: int) -> None:
        """`on_batch` of em3.data.cache.build_item_tokens: a cache progress report (so a cancel stops the build)."""
        self.progress(Progress(phase="cache", step=done, steps_per_epoch=total,
                               message=f"feature cache: {done}/{total} items encoded"))

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
