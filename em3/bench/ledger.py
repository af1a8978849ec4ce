"""The bench ledger: every finished table run as a small committed JSON record, so a table survives its store.

A checkout's `mlruns/` is not committed (run outputs), and a new checkout starts with an empty store: the
session-5 quality table lost 49 finished runs that way. The ledger keeps what the table needs of each run —
its full config, em3 tags and final metrics, no weights, curves or artifacts — under
`docs/bench/runs/<group>/<config hash>.json` (one file per run, so shards never write the same file).
`restore` copies records the store lacks into it as ordinary runs (tag `em3.imported_from = ledger:...`),
so the bench resumes by config hash and the table renders in any checkout.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from em3.bench.runs import HASH_TAG, RunRecord
from em3.config import to_dict
from em3.paths import REPO_ROOT

LEDGER_ENV = "EM3_BENCH_LEDGER"   # another ledger root ('' = the default; tests point it at a temp dir)
KEPT_METRIC_PREFIXES = ("val", "val_cold", "test", "test_cold", "align", "time", "perf", "params", "topk")


def root() -> Path:
    """The ledger root: $EM3_BENCH_LEDGER, else <repo>/docs/bench/runs."""
    return Path(os.environ.get(LEDGER_ENV, "") or REPO_ROOT / "docs" / "bench" / "runs")


def _group_dir(group: str) -> Path:
    if not group or "/" in group or group.startswith("."):
        raise ValueError(f"bench group {group!r}: not a valid ledger folder name")
    return root() / group


def _kept(key: str) -> bool:
    return key == "best_epoch" or key.split("/")[0] in KEPT_METRIC_PREFIXES


def save_group(group: str, records: dict[str, RunRecord], *, log: Callable[[str], None] = lambda s: None) -> int:
    """Write a ledger record for every finished run of `records` (config hash -> run) that has none yet;
    runs imported from this ledger are skipped. Returns how many records were written."""
    from em3.training.run import logged_config

    folder = _group_dir(group)
    written = 0
    for h, rec in records.items():
        path = folder / f"{h}.json"
        if path.exists() or rec.tags.get("em3.imported_from", "").startswith("ledger:"):
            continue
        try:
            cfg = logged_config(rec.run_id)
        except Exception as e:  # noqa: BLE001 - a run without config.json cannot be replayed: say so, go on
            log(f"  ledger: run {rec.run_id} has no readable config.json ({e}); not recorded")
            continue
        body = {"hash": h, "run_name": rec.tags.get("mlflow.runName", ""), "config": to_dict(cfg),
                "tags": {k: v for k, v in sorted(rec.tags.items()) if k.startswith("em3.")},
                "metrics": {k: v for k, v in sorted(rec.metrics.items()) if _kept(k) and v == v},
                "source_run_id": rec.run_id, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
        written += 1
    if written:
        log(f"ledger: {written} new record(s) in {folder}")
    return written


def restore(group: str, *, log: Callable[[str], None] = print) -> int:
    """Import the group's ledger records that the MLflow store lacks (by config hash); returns how many."""
    from em3.bench.offline import import_records

    folder = _group_dir(group)
    if not folder.is_dir():
        return 0
    return import_records(folder, origin="ledger", log=log)


def recorded(group: str) -> dict[str, dict]:
    """{config hash: record} of the group's ledger (for tests and reports)."""
    folder = _group_dir(group)
    out = {}
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        body = json.loads(p.read_text())
        if body.get("hash") != p.stem or HASH_TAG not in body.get("tags", {}):
            raise ValueError(f"{p}: not a ledger record (hash {body.get('hash')!r} vs file name)")
        out[p.stem] = body
    return out
