"""The dashboard worker raising inside a job (NaN loss, out of memory, a library calling sys.exit): the job and
its MLflow run are FAILED with the message, and the queue goes on with the next job."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from app.jobs import FAILED, FINISHED, JobRegistry, default_train_fn
from em3 import paths
from em3.config import preset, with_overrides
from em3.training import fit as fit_module

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
FAULTS = {11: ("nan", "NaN"), 12: ("oom", "out of memory"), 13: ("exit", "SystemExit")}


@pytest.fixture
def faulty_loss(monkeypatch: pytest.MonkeyPatch):
    """compute_loss misbehaves on the 2nd step of runs whose seed names a fault (11 NaN, 12 OOM, 13 sys.exit)."""
    real = fit_module.compute_loss
    calls: dict[int, int] = {}

    def compute_loss(out, labels, cfg):
        seed = cfg.train.seed
        calls[seed] = calls.get(seed, 0) + 1
        total, bce, cic = real(out, labels, cfg)
        if seed in FAULTS and calls[seed] == 2:
            kind = FAULTS[seed][0]
            if kind == "nan":
                return total * float("nan"), bce, cic
            if kind == "oom":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise SystemExit(3)
        return total, bce, cic
    monkeypatch.setattr(fit_module, "compute_loss", compute_loss)


def test_a_failing_job_is_failed_with_its_message_and_the_queue_goes_on(fresh_store: Path, faulty_loss):
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reg = JobRegistry(train_fn=default_train_fn)
        base = with_overrides(preset("tiny", "id_only"), {"train.epochs": 1, "train.max_steps_per_epoch": 3})
        seeds = [11, 0, 12, 13, 1]
        ids = [reg.submit(with_overrides(base, {"train.seed": s}), name=f"seed{s}") for s in seeds]
        snaps, timeout = [], 300.0
        for job_id in ids:
            try:
                snaps.append(reg.wait(job_id, timeout=timeout))
            except TimeoutError:            # a dead worker: the rest will never run, do not wait for each
                snaps.append(reg.get(job_id))
                timeout = 1.0
    finally:
        torch.set_num_threads(torch_threads)
    client = MlflowClient(tracking_uri=paths.tracking_uri())
    exp = client.get_experiment_by_name("em3").experiment_id
    assert reg._worker.is_alive(), [(s["name"], s["state"]) for s in snaps]   # noqa: SLF001 - survived every fault
    for seed, snap in zip(seeds, snaps):
        runs = client.search_runs([exp], filter_string=f"tags.`em3.job` = '{snap['id']}'")
        assert len(runs) == 1, (seed, snap["state"], snap["error"])
        run = runs[0]
        if seed in FAULTS:
            words = FAULTS[seed][1]
            assert snap["state"] == FAILED and words in snap["error"], (seed, snap["state"], snap["error"])
            assert run.info.status == "FAILED" and words in run.data.tags.get("em3.error", ""), run.data.tags
        else:                                       # the jobs queued after a failure still run and finish
            assert snap["state"] == FINISHED, (seed, snap["error"])
            assert run.info.status == "FINISHED" and "test/auc" in run.data.metrics
