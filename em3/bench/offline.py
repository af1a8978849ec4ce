"""Bench runs without MLflow: train with the project's fit loop and keep each run as a JSON record.

For a borrowed machine that lacks MLflow (the GPU box): `python -m em3 bench quality --offline-dir DIR`
trains there into DIR (one `<config hash>.json` per finished run, resumable), and
`--import-offline DIR` here copies the records into the MLflow store as ordinary runs
(tagged `em3.imported_from`), where the table and the dashboard read them.
It trains exactly like run_training (same data, cache, model, fit, evaluate_splits); what it
leaves out are the top-K metrics, the explain artifacts and the checkpoints.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from em3.bench.runs import HASH_TAG, RunRecord, config_hash
from em3.config import CONFIG_VERSION, Config, from_dict, to_dict

OFFLINE_TAG = "em3.imported_from"


@dataclass
class OfflineResult:
    run_id: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)


class OfflineStore:
    """A directory of finished-run records, keyed by config hash."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def finished(self) -> dict[str, RunRecord]:
        out = {}
        for p in sorted(self.root.glob("*.json")):
            rec = json.loads(p.read_text())
            out[rec["hash"]] = RunRecord(run_id=rec["hash"], status="FINISHED", tags=rec["tags"],
                                         params={}, metrics=rec["metrics"])
        return out

    def claim(self, h: str) -> bool:
        """Take the run with config hash `h` for this process (atomic create); False when another process holds it."""
        try:
            fd = os.open(self.root / f"{h}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        return True

    def release(self, h: str) -> None:
        """Give a claimed run back (it failed): the next call may try it again."""
        (self.root / f"{h}.claim").unlink(missing_ok=True)

    def pending(self) -> int:
        """Runs claimed by some process and not yet finished (in progress elsewhere)."""
        return sum(1 for p in self.root.glob("*.claim") if not p.with_suffix(".json").exists())

    def clear_claims(self) -> int:
        """Drop every claim (a new pool starts: claims of an earlier, killed pool are stale)."""
        stale = list(self.root.glob("*.claim"))
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    def save(self, record: dict[str, Any]) -> Path:
        path = self.root / f"{record['hash']}.json"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
        return path


def offline_trainer(store: OfflineStore):
    """A `train(cfg, *, tags, run_name)` for run_quality that trains without MLflow and saves a record."""
    from em3.data.prepare import prepare
    from em3.evaluation.evaluate import evaluate_splits
    from em3.models.em3 import build_model
    from em3.training.distributed import resolve_device
    from em3.training.fit import fit

    def train(cfg: Config, *, tags: dict[str, str], run_name: str) -> OfflineResult:
        from em3.training.runtime import configure_run

        device = resolve_device(cfg.train.device)
        configure_run(cfg)
        data = prepare(cfg)
        samples = data.samples
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg, samples=samples, tokens=data.tokens).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        history: dict[str, list[list[float]]] = {}

        def on_epoch_end(st, metrics: dict[str, float], _opt) -> None:
            for k, v in metrics.items():
                history.setdefault(k, []).append([st.epoch, float(v), int(time.time() * 1000)])

        state, _ = fit(model, samples, cfg, device=device, on_epoch_end=on_epoch_end)
        n_train, n_total = model.count_parameters()
        peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan"))
        metrics = {"best_epoch": float(state.best_epoch), "params/trainable": float(n_train),
                   "params/total": float(n_total), "time/train_seconds": state.train_seconds,
                   "perf/samples_per_s": state.samples_seen / max(state.train_seconds, 1e-9),
                   "perf/peak_memory_mb": peak}
        metrics.update(evaluate_splits(model, samples, batch_size=cfg.train.eval_batch_size, device=device))
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        record = {"hash": config_hash(cfg), "run_name": run_name, "config": to_dict(cfg),
                  "tags": {**tags, "em3.device": str(device), "em3.gpu": gpu}, "metrics": metrics,
                  "history": history, "finished_ms": int(time.time() * 1000)}
        store.save(record)
        return OfflineResult(run_id=record["hash"], status="FINISHED", metrics=metrics)

    return train


def run_pool(argv: list[str], workers: int, store: OfflineStore, *, log=print) -> int:
    """Run `python -m em3 bench quality ARGV` in `workers` processes sharing `store` through claim files.

    Stale claims (of a pool that was killed) are dropped first. If this process is stopped
    (SIGTERM from `timeout`, Ctrl-C), it stops its workers too, so their finished records stay
    and nothing keeps running behind the caller's back. Returns the worst exit status.
    """
    import signal
    import subprocess
    import sys

    dropped = store.clear_claims()
    if dropped:
        log(f"dropped {dropped} stale claim(s) in {store.root}")
    # The same arguments; argparse keeps the last value of a repeated flag, so each worker is a pool of one.
    cmd = [sys.executable, "-m", "em3", "bench", "quality", *argv, "--workers", "1"]
    procs = [subprocess.Popen([*cmd, "--pool-worker", str(w)]) for w in range(workers)]
    log(f"pool of {workers} workers on {store.root} (pids {' '.join(str(p.pid) for p in procs)})")

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, stop)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        log(f"pool stopped; {len(store.finished())} record(s) in {store.root}")
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    log(f"pool done: exit codes {codes}; {len(store.finished())} record(s) in {store.root}")
    return max(codes)


def export_records(group: str, root: Path | str, *, log=print) -> int:
    """Write the group's FINISHED MLflow runs into `root` as records (hash, tags, metrics; no config or curves).

    An offline pool started on that directory (e.g. on a GPU machine) then skips what is already done
    here and can still choose each cell's search point from their val metrics. import_records never
    copies these back (they carry `exported_from`).
    """
    from em3.bench.runs import finished_by_hash

    store = OfflineStore(root)
    n = 0
    for h, rec in finished_by_hash(group).items():
        store.save({"hash": h, "run_name": rec.tags.get("mlflow.runName", ""), "tags": rec.tags,
                    "metrics": rec.metrics, "exported_from": rec.run_id})
        n += 1
    log(f"exported {n} finished run(s) of {group} into {root}")
    return n


def import_records(root: Path, *, origin: str, log=print) -> int:
    """Copy every record under `root` into the local MLflow store; records whose hash FINISHED there are skipped,
    and so are records that came from an MLflow store in the first place (export_records)."""
    from mlflow.entities import Metric

    from em3.bench.runs import group_runs
    from em3.training.tracking import RunTracker, client

    n = 0
    done_by_group: dict[str, set[str]] = {}
    for p in sorted(Path(root).glob("*.json")):
        rec = json.loads(p.read_text())
        if "exported_from" in rec:
            continue
        group = rec["tags"].get("em3.group", "")
        if group not in done_by_group:
            done_by_group[group] = {r.tags.get(HASH_TAG) for r in group_runs(group)}
        if rec["hash"] in done_by_group[group]:
            continue
        cfg = from_dict(rec["config"])
        tags = {**rec["tags"], OFFLINE_TAG: f"{origin}:{p.name}", "em3.config_version": str(CONFIG_VERSION)}
        tracker = RunTracker.start(cfg, tags=tags, run_name=rec.get("run_name"), device=tags.get("em3.device", "cpu"))
        for key, rows in rec.get("history", {}).items():
            for step, value, ts in rows:
                tracker._buffer.append(Metric(key, float(value), int(ts), int(step)))
        tracker.metrics({k: v for k, v in rec["metrics"].items() if v == v})
        tracker.finish("FINISHED")
        done_by_group[group].add(rec["hash"])
        n += 1
    log(f"imported {n} run record(s) from {root} into {client().tracking_uri}")
    return n
