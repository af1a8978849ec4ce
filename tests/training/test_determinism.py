"""`train.deterministic`: identical configs give identical runs at two CPU threads (without it, the threads'
accumulation order moved a tiny run's val AUC by up to 6e-4 between identical runs, and a resumed run missed
the uninterrupted one's metrics: CI's flaky test_kill_resume)."""
from __future__ import annotations

import torch

from em3.config import preset, with_overrides
from em3.training.run import run_training


def test_three_identical_two_thread_runs_log_identical_metrics(fresh_store):
    cfg = with_overrides(preset("tiny"), {"train.epochs": 3, "train.patience": 0, "speed.threads": 2})
    runs = [run_training(cfg, run_name=f"same{i}") for i in range(3)]
    assert torch.get_num_threads() == 2                                  # the run applied its thread count
    keys = [k for k in runs[0].metrics if k.split("/")[0] in ("val", "test", "test_cold")]
    assert "val/auc" in keys and "test/auc" in keys
    for r in runs[1:]:
        assert {k: r.metrics[k] for k in keys} == {k: runs[0].metrics[k] for k in keys}


def test_the_run_logs_whether_it_was_deterministic(fresh_store):
    from mlflow import MlflowClient

    from em3 import paths

    cfg = with_overrides(preset("tiny"), {"train.epochs": 1, "train.deterministic": False})
    before = torch.are_deterministic_algorithms_enabled()
    try:
        run = run_training(cfg, run_name="free")
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before, warn_only=True)
    tags = MlflowClient(tracking_uri=paths.tracking_uri()).get_run(run.run_id).data.tags
    assert tags["em3.deterministic"] == "false"


def test_skipping_the_uninitialized_fill_keeps_the_run_identical(fresh_store):
    """speed.fill_uninitialized = False (exact): torch stops NaN-filling new tensors, and the run's metrics are
    the same as with the fill."""
    from mlflow import MlflowClient

    from em3 import paths
    from em3.training.runtime import configure_determinism

    base = with_overrides(preset("tiny"), {"train.epochs": 2, "train.patience": 0, "speed.threads": 2})
    try:
        configure_determinism(base.train, base.speed)
        assert torch.utils.deterministic.fill_uninitialized_memory and torch.empty(64).isnan().all()
        filled = run_training(base, run_name="filled")
        skipped = run_training(with_overrides(base, {"speed.fill_uninitialized": False}), run_name="skipped")
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = True
    keys = [k for k in filled.metrics if k.split("/")[0] in ("val", "test", "test_cold")]
    assert "val/auc" in keys
    assert {k: skipped.metrics[k] for k in keys} == {k: filled.metrics[k] for k in keys}
    tags = MlflowClient(tracking_uri=paths.tracking_uri()).get_run(skipped.run_id).data.tags
    assert tags["em3.fill_uninitialized"] == "false"
