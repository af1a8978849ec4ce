"""A training process SIGKILLed mid-epoch: marked interrupted (not RUNNING forever), resumed from its last
checkpoint by `python -m em3 train --resume RUN_ID`, and ending with the metrics of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from em3 import paths
from em3.config import preset, with_overrides
from em3.training import checkpoint
from em3.training.run import run_training

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
EPOCHS = 3
SETS = [f"train.epochs={EPOCHS}", "train.patience=0", "train.log_every=1"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "em3", "train", "--data", "synthetic", "--preset", "tiny", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _wait_for_first_checkpoint(store: Path, proc: subprocess.Popen, *, timeout: float = 400) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(store.glob("artifacts/*/artifacts/checkpoint/last.pt.json"))
        if found:
            return found[0].parent
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before its first checkpoint: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint after {timeout:.0f} s")


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(fresh_store: Path, tmp_path: Path):
    client = MlflowClient(tracking_uri=paths.tracking_uri())
    # 1. start a CLI run and SIGKILL it in epoch 2, after epoch 1's checkpoint was uploaded
    proc = subprocess.Popen(_cli("--run-name", "killed", *sum((["--set", s] for s in SETS), [])), cwd=REPO,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ckpt_dir = _wait_for_first_checkpoint(fresh_store, proc)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    run_id = ckpt_dir.parent.parent.name
    assert checkpoint.load_resume(ckpt_dir)[2].epoch < EPOCHS          # killed before the end, after a checkpoint
    assert client.get_run(run_id).info.status == "RUNNING"               # nothing could mark it yet

    # 2. the next start-up (here the uninterrupted reference run, same seed) marks the dead run interrupted
    cfg = with_overrides(preset("tiny"), {s.split("=")[0]: s.split("=")[1] for s in SETS})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = run_training(cfg, run_name="straight")
    finally:
        torch.set_num_threads(threads)
    killed = client.get_run(run_id)
    assert killed.info.status != "RUNNING", "a SIGKILLed run still looks RUNNING after the next start-up"
    assert "interrupted" in killed.data.tags.get("em3.error", ""), killed.data.tags
    assert killed.data.tags.get("em3.interrupted") == "true"

    # 3. resume from the last checkpoint in a new process
    done = subprocess.run(_cli("--resume", run_id, "--json"), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["run_id"] == run_id and result["status"] == "FINISHED"
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    for split in ("val", "test", "test_cold"):
        for name in ("auc", "gauc", "logloss"):
            assert result[split][name] == pytest.approx(straight.metrics[f"{split}/{name}"], abs=1e-6), (split, name)
    # nothing lost, nothing doubled: the same metric points as the uninterrupted run
    for key in ("train/loss", "val/auc"):
        got = sorted({m.step for m in client.get_metric_history(run_id, key)})
        want = sorted({m.step for m in client.get_metric_history(straight.run_id, key)})
        assert got == want, key
    assert int(resumed.data.tags["em3.pid"]) != proc.pid                 # the resuming process owns the run now
