"""MLflow tracking for one run through MlflowClient with an explicit run id (never the fluent API).

Step metrics are buffered and written with log_batch once per epoch, so the SQLite store
sees few writes; every write retries on "database is locked" with backoff.
"""
from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from em3 import paths
from em3.arms import arm_tags
from em3.config import CONFIG_VERSION, Config, flatten, to_dict
from em3.errors import RunError

EXPERIMENT = "em3"
T = TypeVar("T")


# SQLite errors another process causes and that go away on a second try: a write lock, and two processes
# creating a fresh store's schema at once (MLflow's migrations: "duplicate column name: step",
# "table experiments already exists"; seen when two bench shards started on an empty store). Not an
# experiment that already exists: experiment_id handles that one.
TRANSIENT = re.compile(r"locked|duplicate column name|(table|index) \S+ already exists")


def retry(call: Callable[[], T], *, attempts: int = 8, delay: float = 0.1) -> T:
    """Run an MLflow call, retrying transient SQLite errors (TRANSIENT) with exponential backoff."""
    for i in range(attempts):
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - MLflow wraps sqlite errors in several types
            if not TRANSIENT.search(str(e).lower()) or i == attempts - 1:
                raise
            time.sleep(delay * 2 ** i)
    raise AssertionError("unreachable")


def client(uri: str | None = None) -> MlflowClient:
    """A client of `uri` (default: the default store). Constructing it runs MLflow's schema migrations on a
    fresh SQLite store, so it retries too: two processes started on an empty mlruns/ race there (session 10
    lost a bench shard to "duplicate column name: step" before this retry)."""
    return retry(lambda: MlflowClient(tracking_uri=uri or paths.tracking_uri()))


def experiment_id(c: MlflowClient, name: str = EXPERIMENT) -> str:
    """The experiment's id, created (artifacts under mlruns/ for the default store) if missing."""
    exp = retry(lambda: c.get_experiment_by_name(name))
    if exp is not None:
        return exp.experiment_id
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        location = (paths.mlruns_dir() / "artifacts").as_uri()
    try:
        return retry(lambda: c.create_experiment(name, artifact_location=location))
    except Exception:  # noqa: BLE001 - another process created it first
        exp = retry(lambda: c.get_experiment_by_name(name))
        if exp is None:
            raise
        return exp.experiment_id


def dataset_tag(cfg: Config) -> str:
    return f"synthetic-{cfg.data.preset}" if cfg.data.source == "synthetic" else cfg.data.source


class RunTracker:
    """One MLflow run: params, tags, buffered metrics, artifacts, terminal status."""

    def __init__(self, c: MlflowClient, run_id: str):
        self.client = c
        self.run_id = run_id
        self._buffer: list[Metric] = []

    @classmethod
    def start(cls, cfg: Config, *, tags: dict[str, str] | None = None, run_name: str | None = None,
              device: str = "cpu") -> "RunTracker":
        """Create the run with the standard tags, flattened params and config.json.

        em3.arm is the config's arm, or "custom" (with em3.base_arm) when an arm-defining knob contradicts it.
        """
        c = client()
        mark_stale_runs(c)   # start-up: runs whose process died are no longer shown RUNNING
        all_tags = {**arm_tags(cfg), "em3.ranker": cfg.model.ranker.kind, "em3.dataset": dataset_tag(cfg),
                    "em3.kind": "ctr", "em3.config_version": str(CONFIG_VERSION), "em3.device": device,
                    "em3.pid": str(os.getpid()), "em3.host": socket.gethostname(), **(tags or {})}
        exp = experiment_id(c)
        run = retry(lambda: c.create_run(exp, tags=all_tags, run_name=run_name))
        tracker = cls(c, run.info.run_id)
        params = [Param(k, str(v)) for k, v in flatten(cfg).items()]
        for i in range(0, len(params), 100):
            retry(lambda: c.log_batch(tracker.run_id, params=params[i:i + 100]))
        tracker.log_json(to_dict(cfg), "config.json")
        return tracker

    @classmethod
    def reopen(cls, run_id: str) -> "RunTracker":
        """Continue an existing run (resume): status back to RUNNING."""
        c = client()
        mark_stale_runs(c)
        retry(lambda: c.get_run(run_id))
        retry(lambda: c.update_run(run_id, status="RUNNING"))
        # this process owns the run now (the stale check reads these); the interruption note is history
        retry(lambda: c.log_batch(run_id, tags=[RunTag("em3.pid", str(os.getpid())),
                                                RunTag("em3.host", socket.gethostname()),
                                                RunTag("em3.interrupted", "false")]))
        run = retry(lambda: c.get_run(run_id))
        if run.data.tags.get("em3.error", "").startswith("interrupted:"):
            retry(lambda: c.delete_tag(run_id, "em3.error"))
        return cls(c, run_id)

    def metric(self, key: str, value: float, step: int = 0) -> None:
        """Buffer one metric; written on flush()."""
        self._buffer.append(Metric(key, float(value), int(time.time() * 1000), int(step)))

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        for k, v in values.items():
            self.metric(k, v, step)

    def flush(self) -> None:
        """Write the buffered metrics in batches of ≤ 1000 (MLflow's log_batch limit)."""
        buf, self._buffer = self._buffer, []
        for i in range(0, len(buf), 1000):
            retry(lambda: self.client.log_batch(self.run_id, metrics=buf[i:i + 1000]))

    def tag(self, key: str, value: str) -> None:
        retry(lambda: self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)[:5000])]))

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        retry(lambda: self.client.log_artifacts(self.run_id, str(directory), artifact_path))

    def log_json(self, obj: Any, name: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(json.dumps(obj, indent=1))
            self.artifact(p, artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        retry(lambda: self.client.set_terminated(self.run_id, status=status))

    def fail(self, error: str, *, status: str = "FAILED") -> None:
        """Keep what was logged, add the em3.error tag, mark FAILED (KILLED for an interrupt)."""
        try:
            self.flush()
        finally:
            self.tag("em3.error", error)
            retry(lambda: self.client.set_terminated(self.run_id, status=status))


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def mark_stale_runs(c: MlflowClient | None = None) -> list[str]:
    """Mark RUNNING runs whose process (tags em3.pid + em3.host, this machine) is gone as FAILED + interrupted.

    A SIGKILLed CLI run or a dashboard server that died mid-job cannot mark its own run; the next
    start-up (a new run, a resume, the dashboard's runs table) does. Returns the run ids marked.
    """
    c = c or client()
    host = socket.gethostname()
    try:
        exps = [e.experiment_id for e in retry(lambda: c.search_experiments())]
        if not exps:
            return []
        runs = retry(lambda: c.search_runs(exps, filter_string="attributes.status = 'RUNNING'", max_results=1000))
    except Exception:  # noqa: BLE001 - a missing or busy store must not stop a start-up
        return []
    marked = []
    for run in runs:
        tags = run.data.tags
        pid = tags.get("em3.pid", "")
        if not pid.isdigit() or tags.get("em3.host", host) != host or process_alive(int(pid)):
            continue
        rid = run.info.run_id
        note = (f"interrupted: process {pid} ended without finishing the run (killed, crashed or the dashboard "
                f"restarted); resume it with `python -m em3 train --resume {rid}` or the Runs page's Resume button")
        retry(lambda: c.log_batch(rid, tags=[RunTag("em3.error", note), RunTag("em3.interrupted", "true")]))
        retry(lambda: c.set_terminated(rid, status="FAILED"))
        marked.append(rid)
    return marked


def resolve_run_id(run_id: str, c: MlflowClient | None = None) -> str:
    """A whole run id from a unique prefix of one, as the dashboard shows them ('947fed7c'); a whole id as given.
    RunError naming the prefix when no run or several runs of the store start with it."""
    rid = run_id.strip().lower()
    if not rid:
        raise RunError("run id: empty; give a run id or a prefix of one (the Runs page lists them)")
    if re.fullmatch(r"[0-9a-f]{32}", rid):
        return rid
    c = c or client()
    exps = [e.experiment_id for e in retry(lambda: c.search_experiments())]
    found: list[str] = []
    token: str | None = None
    while exps:                                           # every page of every experiment's runs
        page = retry(lambda: c.search_runs(exps, max_results=5000, page_token=token))
        found += [r.info.run_id for r in page if r.info.run_id.startswith(rid)]
        token = page.token
        if not token:
            break
    if len(found) == 1:
        return found[0]
    if not found:
        raise RunError(f"run {run_id}: no run in {paths.tracking_uri()} has an id starting with {rid!r}")
    raise RunError(f"run {run_id}: {len(found)} runs have ids starting with {rid!r} "
                   f"({', '.join(sorted(found)[:5])}{', ...' if len(found) > 5 else ''}); give more characters")


def download_dir(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Download a run's artifact folder; RunError-free: callers decide what a missing folder means."""
    return Path(retry(lambda: client().download_artifacts(run_id, artifact_path, str(dst))))
