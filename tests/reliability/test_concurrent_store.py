"""Several runs at once on the default SQLite store: two in-process jobs (threads), one CLI process, a writer
committing one metric at a time, and a reader polling like the dashboard.

No "database is locked" may reach anyone, and every metric point each run logged is in the store
(counted against what the config says it logs: log_every=1 -> one train/loss point per step).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from em3 import paths
from em3.config import preset, with_overrides
from em3.data.load import load_dataset
from em3.data.samples import build_samples
from em3.training.run import run_training
from em3.training.tracking import RunTracker

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
SETS = {"train.epochs": "2", "train.max_steps_per_epoch": "6", "train.log_every": "1", "train.patience": "0"}
HAMMER_POINTS = 200
RESULTS: dict[str, object] = {}


def _expected_steps(cfg) -> int:
    samples = build_samples(load_dataset(cfg.data), cfg.data)
    full = math.ceil(len(samples.splits["train"]) / cfg.train.batch_size)
    return min(full, cfg.train.max_steps_per_epoch) * cfg.train.epochs


def test_two_jobs_and_a_cli_run_write_the_store_at_once_and_lose_nothing(fresh_store: Path):
    cfg = with_overrides(preset("tiny"), SETS)
    steps = _expected_steps(cfg)
    client = MlflowClient(tracking_uri=paths.tracking_uri())
    errors: list[str] = []
    results: dict[str, object] = {}
    stop_reading = threading.Event()
    reads = [0]

    def job(name: str, seed: int) -> None:
        try:
            results[name] = run_training(with_overrides(cfg, {"train.seed": seed}), run_name=name)
        except BaseException as e:  # noqa: BLE001 - recorded and asserted below
            errors.append(f"{name}: {type(e).__name__}: {e}")

    def hammer() -> None:           # a writer committing one metric at a time: maximal lock contention
        try:
            tracker = RunTracker.start(cfg, run_name="hammer")
            results["hammer"] = tracker.run_id
            for i in range(HAMMER_POINTS):
                tracker.metric("hammer/value", float(i), i)
                tracker.flush()
            tracker.finish()
        except BaseException as e:  # noqa: BLE001
            errors.append(f"hammer: {type(e).__name__}: {e}")

    def reader() -> None:          # the dashboard polling the store meanwhile
        while not stop_reading.is_set():
            try:
                exps = [e.experiment_id for e in client.search_experiments()]
                if exps:
                    client.search_runs(exps, max_results=100)
                reads[0] += 1
            except Exception as e:  # noqa: BLE001
                errors.append(f"reader: {type(e).__name__}: {e}")
            time.sleep(0.05)

    cli = subprocess.Popen([sys.executable, "-m", "em3", "train", "--data", "synthetic", "--preset", "tiny", "--json",
                            "--run-name", "cli", "--seed", "3", *sum((["--set", f"{k}={v}"] for k, v in SETS.items()), [])],
                           cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    threads = [threading.Thread(target=job, args=(f"job{i}", i)) for i in (1, 2)] + \
        [threading.Thread(target=hammer), threading.Thread(target=reader)]
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for t in threads:
            t.start()
        for t in threads[:3]:
            t.join(timeout=900)
        out, err = cli.communicate(timeout=900)
    finally:
        stop_reading.set()
        threads[3].join(timeout=30)
        torch.set_num_threads(torch_threads)
        if cli.poll() is None:
            cli.kill()
    assert not errors, errors
    assert cli.returncode == 0, err[-3000:]
    assert "database is locked" not in (out + err).lower()
    cli_result = json.loads(out.strip().splitlines()[-1])
    run_ids = {"job1": results["job1"].run_id, "job2": results["job2"].run_id, "cli": cli_result["run_id"]}

    counts = {}
    for name, rid in run_ids.items():
        run = client.get_run(rid)
        assert run.info.status == "FINISHED", (name, run.info.status, run.data.tags.get("em3.error"))
        loss = client.get_metric_history(rid, "train/loss")
        assert sorted(m.step for m in loss) == list(range(1, steps + 1)), name      # every step, once
        assert sorted({m.step for m in client.get_metric_history(rid, "val/auc")}) == [1, 2], name
        counts[name] = sum(len(client.get_metric_history(rid, k)) for k in run.data.metrics)
    hammered = client.get_metric_history(results["hammer"], "hammer/value")
    assert sorted(m.step for m in hammered) == list(range(HAMMER_POINTS))          # 200 single commits, none lost
    RESULTS.update(runs=4, hammer_points=len(hammered), train_loss_points_per_run=steps, metric_points=counts, reads=reads[0])
    print("concurrent-store figures:", json.dumps(RESULTS))
