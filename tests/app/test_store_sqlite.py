"""The run list's sqlite fast path reads the same runs, order, tags and metrics as MlflowClient.search_runs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from app.store_sqlite import read_runs

TAGS = ("em3.arm", "em3.ranker", "em3.error")


def _as_tuple(run_id, exp, name, status, start, end, tags, metrics):
    nan_safe = {k: ("nan" if math.isnan(v) else v) for k, v in metrics.items()}
    return run_id, exp, name, status, start, end, tags, nan_safe


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, MlflowClient, list[str]]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = MlflowClient(tracking_uri=uri)
    exps = [c.create_experiment("a", artifact_location=str(tmp_path / "a")),
            c.create_experiment("b", artifact_location=str(tmp_path / "b"))]
    for i in range(6):
        run = c.create_run(exps[i % 2], run_name=f"r{i}", start_time=1_000 + i // 2,   # ties on start_time
                           tags={"em3.arm": f"arm{i}", "em3.ranker": "din", "unrelated": "x"})
        c.log_metric(run.info.run_id, "val/auc", 0.5 + i / 100, step=0)
        c.log_metric(run.info.run_id, "val/auc", 0.6 + i / 100, step=1)   # latest is step 1
        c.log_metric(run.info.run_id, "train/loss", math.nan if i == 2 else 0.3)
        c.log_param(run.info.run_id, "lr", "0.001")
        if i == 4:
            c.delete_run(run.info.run_id)
        elif i != 5:
            c.set_terminated(run.info.run_id, "FINISHED")
    gone = c.create_experiment("gone")
    c.create_run(gone, run_name="in-deleted-experiment")
    c.delete_experiment(gone)
    return uri, c, [e.experiment_id for e in c.search_experiments()]


def test_fast_path_reads_what_search_runs_reads(store) -> None:
    uri, c, exps = store
    fast = read_runs(uri, exps, TAGS)
    assert fast is not None
    slow = c.search_runs(exps, max_results=5000, order_by=["attributes.start_time DESC"])
    want = [_as_tuple(r.info.run_id, r.info.experiment_id, r.info.run_name, r.info.status, r.info.start_time,
                      r.info.end_time, {t: r.data.tags[t] for t in TAGS if t in r.data.tags}, r.data.metrics)
            for r in slow]
    got = [_as_tuple(r.run_id, r.experiment_id, r.name, r.status, r.start_time, r.end_time, r.tags, r.metrics)
           for r in fast]
    assert len(got) == 5   # the deleted run and the deleted experiment's run are left out
    assert sorted(got, key=str) == sorted(want, key=str)
    assert [g[4] for g in got] == sorted((g[4] for g in got), reverse=True)   # newest first
    by_name = {r.name: r for r in fast}
    assert by_name["r3"].metrics["val/auc"] == pytest.approx(0.63)
    assert math.isnan(by_name["r2"].metrics["train/loss"])
    assert by_name["r5"].status == "RUNNING" and by_name["r0"].status == "FINISHED"
    assert "unrelated" not in by_name["r0"].tags and by_name["r0"].tags["em3.arm"] == "arm0"
    assert by_name["r1"].artifact_uri == c.get_run(by_name["r1"].run_id).info.artifact_uri


def test_fast_path_declines_what_it_cannot_read(tmp_path: Path) -> None:
    assert read_runs(f"file://{tmp_path}/mlruns", ["0"], TAGS) is None
    assert read_runs(f"sqlite:///{tmp_path}/missing.db", ["0"], TAGS) is None
    (tmp_path / "other.db").write_bytes(b"")   # a sqlite file without MLflow's tables
    assert read_runs(f"sqlite:///{tmp_path}/other.db", ["0"], TAGS) is None
