"""The training ETA that Progress carries to the dashboard: from recent step times, plus the validation passes left.

It was (steps left) x (mean step time since the epoch began), validation left out: a slow stretch (a run's
first steps in a fresh server, a page rerun holding the GIL) stayed in the mean until the epoch ended:
on the dashboard a MovieLens run read "ETA 4m58s" at step 6, while 10 epochs at its steady step time come
to about 2m10s.
Here: the median of the last `window` step times, times the steps left, plus one validation pass per
epoch still to validate at the last pass's measured time (none counted before the first pass). Training
only, to the epoch cap: the final evaluation and the explain artifacts come after it, and early stopping
can end the run sooner; the page says "≈ 1m40s of training to epoch 10". An estimate, not a bound: a run
whose steps slow down (a page left open beside it) takes longer than it said.
"""
from __future__ import annotations

import math
from collections import deque
from statistics import median


class TrainEta:
    """Feed it each step's seconds (`step`) and each validation pass's (`validated`); ask `seconds_left`."""

    def __init__(self, window: int = 20):
        if window < 1:
            raise ValueError(f"TrainEta: window must be >= 1, got {window}")
        self._steps: deque[float] = deque(maxlen=window)
        self._val_s = 0.0

    def step(self, seconds: float) -> None:
        self._steps.append(float(seconds))

    def validated(self, seconds: float) -> None:
        self._val_s = float(seconds)

    def seconds_left(self, *, steps_left: int, epochs_after: int, steps_per_epoch: int) -> float:
        """Seconds of training left: `steps_left` in this epoch, then `epochs_after` whole epochs; NaN before
        the first step. This epoch's validation and each later epoch's are counted once a pass was timed."""
        if not self._steps:
            return math.nan
        per_step = median(self._steps)
        return (steps_left + epochs_after * steps_per_epoch) * per_step + (1 + epochs_after) * self._val_s
