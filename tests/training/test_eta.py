"""The progress ETA (em3/training/eta.py): recent step times, one validation pass per epoch still to validate."""
from __future__ import annotations

import math

import pytest

from em3.training.eta import TrainEta


def test_slow_first_steps_do_not_inflate_the_eta_once_the_window_has_passed_them():
    eta = TrainEta(window=4)
    assert math.isnan(eta.seconds_left(steps_left=10, epochs_after=1, steps_per_epoch=10))
    for s in (3.0, 2.0, 1.0):          # warm-up
        eta.step(s)
    for _ in range(4):
        eta.step(0.2)
    # the epoch-mean estimate would use (3 + 2 + 1 + 0.8) / 7 = 0.97 s a step; the window's median is 0.2 s
    assert eta.seconds_left(steps_left=3, epochs_after=2, steps_per_epoch=10) == pytest.approx((3 + 20) * 0.2)


def test_validation_is_counted_once_per_epoch_still_to_validate():
    eta = TrainEta()
    eta.step(0.5)
    eta.validated(2.0)
    # this epoch's pass and the next two epochs' passes
    assert eta.seconds_left(steps_left=4, epochs_after=2, steps_per_epoch=10) == pytest.approx(24 * 0.5 + 3 * 2.0)
    assert eta.seconds_left(steps_left=0, epochs_after=0, steps_per_epoch=10) == pytest.approx(2.0)


def test_the_median_resists_one_slow_step_and_the_window_must_be_positive():
    eta = TrainEta(window=5)
    for s in (0.1, 0.1, 5.0, 0.1, 0.1):   # a pause (another process, a checkpoint write)
        eta.step(s)
    assert eta.seconds_left(steps_left=10, epochs_after=0, steps_per_epoch=10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="window"):
        TrainEta(window=0)
