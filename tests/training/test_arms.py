"""Every arm with both rankers trains on the tiny preset and produces finite metrics."""
from __future__ import annotations

import math

import pytest

from em3.config import ARMS, RANKERS, preset, with_overrides
from em3.training.run import run_training


@pytest.mark.parametrize("ranker", RANKERS)
@pytest.mark.parametrize("arm", list(ARMS))
def test_arm_trains_on_tiny(arm: str, ranker: str):
    cfg = with_overrides(preset("tiny", arm), {"model.ranker.kind": ranker, "train.epochs": 1,
                                               "train.max_steps_per_epoch": 2})
    result = run_training(cfg)
    assert result.status == "FINISHED"
    for key in ("val/auc", "test/auc", "test_cold/auc", "test/logloss", "test/recall_at_10"):
        assert math.isfinite(result.metrics[key]), key
    assert result.metrics["params/trainable"] > 0
