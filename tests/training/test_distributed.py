"""torchrun with 2 CPU processes (gloo) reaches the metrics of one process on the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from em3.training.batches import epoch_permutation, global_batches, shard

REPO = Path(__file__).resolve().parents[2]
# Dropout off and no CIC: CIC's in-batch negatives are per rank, so only BCE is batch-split-invariant.
ARGS = ["-m", "em3", "train", "--data", "synthetic", "--preset", "tiny", "--arm", "em3_no_cic", "--json",
        "--set", "train.epochs=2", "--set", "train.max_steps_per_epoch=4",
        "--set", "model.fusion.dropout=0", "--set", "model.ranker.dropout=0"]


def test_shards_are_disjoint_and_cover_each_global_batch():
    perm = epoch_permutation(1000, seed=3, epoch=2)
    assert np.array_equal(perm, epoch_permutation(1000, seed=3, epoch=2))
    assert not np.array_equal(perm, epoch_permutation(1000, seed=3, epoch=3))
    batches = global_batches(perm, batch_size=128, world_size=3)
    assert len(batches) == 8 and len(batches[-1]) == 1000 - 7 * 128
    for b in batches:
        parts = [shard(b, rank=r, world_size=3) for r in range(3)]
        assert sorted(np.concatenate(parts).tolist()) == sorted(b.tolist())
    assert len(global_batches(np.arange(257), batch_size=128, world_size=2)) == 2   # a 1-row tail is dropped
    assert len(global_batches(np.arange(257), batch_size=128, max_steps=1)) == 1


def _run(cmd: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process():
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *ARGS])
    one = _run([sys.executable, *ARGS])
    assert two["status"] == one["status"] == "FINISHED"
    assert two["run_id"] != one["run_id"]
    for split in ("val", "test", "test_cold"):
        for name in ("auc", "gauc", "logloss"):
            assert two[split][name] == pytest.approx(one[split][name], abs=1e-4), (split, name)
