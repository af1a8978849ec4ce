"""Read access to the MLflow store for the pages: runs table, metric curves, artifacts (briefly cached).

Always `em3.training.tracking.client(em3.paths.tracking_uri())` (retried) with explicit run ids. Every
cached function takes the tracking URI as its first argument so a changed store (tests,
`EM3_MLRUNS_DIR`) never serves stale entries.
"""
from __future__ import annotations

import functools
import json
import tempfile
from urllib.parse import urlparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from app.store_sqlite import RunRow, db_path, read_runs
from em3.arms import arm_label
from em3.paths import tracking_uri
from em3.training import tracking

MLFLOW_UI = "http://127.0.0.1:5000"
TAGS = ("em3.arm", "em3.base_arm", "em3.ranker", "em3.dataset", "em3.group", "em3.kind", "em3.error",
        "em3.config_version", "em3.device", "em3.memory_kind", "em3.job", "em3.interrupted")
SUMMARY_METRICS = ("test/auc", "test/gauc", "test/logloss", "test_cold/auc", "test_cold/gauc",
                   "test_cold/logloss", "val/auc", "val_cold/auc", "best_epoch", "time/train_seconds")


def uri() -> str:
    return tracking_uri()


@functools.lru_cache(maxsize=8)
def client(store_uri: str) -> MlflowClient:
    """The store's client, opened with em3's retry (a training job may be creating a fresh store's schema)."""
    return tracking.client(store_uri)


def mlflow_ui_hint(store_uri: str) -> str:
    """How to open this store in the MLflow UI: the store the pages read, not a default path."""
    return f"Start the MLflow UI with `mlflow ui --backend-store-uri {store_uri}` (port 5000)."


def ui_url(experiment_id: str, run_id: str) -> str:
    return f"{MLFLOW_UI}/#/experiments/{experiment_id}/runs/{run_id}"


def _store_exists(store_uri: str) -> bool:
    path = db_path(store_uri)
    return path is None or path.exists()


@st.cache_data(ttl=10, show_spinner=False)
def runs_table(store_uri: str) -> pd.DataFrame:
    """One row per run of every experiment: ids, status, em3 tags (short names), arm_label, summary metrics.

    arm_label names the arm as the pages show it: 'custom (from em3)' for a run tagged custom.
    """
    cols = ["run_id", "experiment_id", "name", "status", "artifact_uri", "start", "end",
            *[t.split(".", 1)[1] for t in TAGS], "arm_label", *SUMMARY_METRICS]
    if not _store_exists(store_uri):
        return pd.DataFrame(columns=cols)
    c = client(store_uri)
    from em3.training.tracking import mark_stale_runs
    mark_stale_runs(c)   # runs whose process died (server restart, SIGKILL) show as interrupted, not RUNNING
    exps = [e.experiment_id for e in c.search_experiments()]
    if not exps:
        return pd.DataFrame(columns=cols)
    rows = [_row(r) for r in _runs(store_uri, c, exps)]
    if not rows:
        return pd.DataFrame(columns=cols)
    table = pd.DataFrame(rows, columns=[*cols, "_metrics"])
    for col in ("start", "end"):   # one vectorised conversion (per row it cost ~0.5 s for 1,000 runs on a busy box)
        table[col] = pd.to_datetime(table[col], unit="ms")
    return table


def _runs(store_uri: str, c: MlflowClient, exps: list[str]) -> list[RunRow]:
    """The active runs of `exps`, newest first: three read-only sqlite queries when the store allows it
    (≈ 0.02 s for 1,000 runs), else `search_runs` (≈ 2 s for the same store; it also loads every param)."""
    fast = read_runs(store_uri, exps, TAGS)
    if fast is not None:
        return fast
    return [RunRow(run_id=r.info.run_id, experiment_id=r.info.experiment_id, name=r.info.run_name or "",
                   status=r.info.status, artifact_uri=r.info.artifact_uri, start_time=r.info.start_time,
                   end_time=r.info.end_time, tags={t: r.data.tags[t] for t in TAGS if t in r.data.tags},
                   metrics=dict(r.data.metrics))
            for r in c.search_runs(exps, max_results=5000, order_by=["attributes.start_time DESC"])]


def _row(r: RunRow) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": r.run_id, "experiment_id": r.experiment_id, "name": r.name,
                           "status": r.status, "artifact_uri": r.artifact_uri, "start": r.start_time,
                           "end": r.end_time}
    for t in TAGS:
        row[t.split(".", 1)[1]] = r.tags.get(t, "")
    row["arm_label"] = arm_label(row["arm"], row["base_arm"])
    for m in SUMMARY_METRICS:
        row[m] = r.metrics.get(m, np.nan)
    row["_metrics"] = dict(r.metrics)
    return row


@st.cache_data(ttl=60, show_spinner=False, max_entries=256)
def run_params(store_uri: str, run_id: str) -> dict[str, str]:
    """Every param of one run ({} when the run is gone): read per run, as only the Runs page's diff needs them."""
    try:
        return dict(client(store_uri).get_run(run_id).data.params)
    except MlflowException:
        return {}


def run_label(row: Any) -> str:
    arm = row.get("arm_label") or row["arm"] or "?"
    return f"{row['name'] or row['run_id'][:8]} · {arm} · {row['status']} · {row['run_id'][:8]}"


@st.cache_data(ttl=3, show_spinner=False)
def metric_history(store_uri: str, run_id: str, key: str) -> pd.DataFrame:
    """(step, value, timestamp) of one metric of one run in the order logged within a step; empty if never logged."""
    try:
        hist = client(store_uri).get_metric_history(run_id, key)
    except MlflowException:
        return pd.DataFrame(columns=["step", "value", "timestamp"])
    frame = pd.DataFrame({"step": [m.step for m in hist], "value": [m.value for m in hist],
                          "timestamp": [m.timestamp for m in hist]})
    return frame.sort_values(["step", "timestamp"], kind="stable").reset_index(drop=True)


@st.cache_data(ttl=60, show_spinner=False)
def artifact_list(store_uri: str, run_id: str, path: str = "") -> list[str]:
    try:
        return [f.path for f in client(store_uri).list_artifacts(run_id, path or None)]
    except (MlflowException, OSError):
        return []


@st.cache_data(ttl=10, show_spinner=False)
def _artifact_uris(store_uri: str) -> dict[str, str]:
    table = runs_table(store_uri)
    return dict(zip(table["run_id"], table["artifact_uri"])) if not table.empty else {}


def _local_root(store_uri: str, run_id: str) -> Path | None:
    """The run's artifact folder when the store keeps artifacts on this disk (the default), else None."""
    uri = _artifact_uris(store_uri).get(run_id)
    if uri is None:   # a run newer than the cached table
        try:
            uri = client(store_uri).get_run(run_id).info.artifact_uri
        except MlflowException:
            return None
    return Path(urlparse(str(uri)).path) if str(uri).startswith("file://") else None


def has_artifact(store_uri: str, run_id: str, path: str) -> bool:
    """Whether the run has written `path`: a stat on local stores (100 runs in ms), list_artifacts otherwise."""
    root = _local_root(store_uri, run_id)
    if root is not None:
        return (root / path).is_file()
    return path in artifact_list(store_uri, run_id, str(Path(path).parent) if "/" in path else "")


def _download(store_uri: str, run_id: str, path: str) -> Path | None:
    root = _local_root(store_uri, run_id)
    if root is not None:
        return root / path if (root / path).is_file() else None
    if not has_artifact(store_uri, run_id, path):
        return None
    dst = Path(tempfile.mkdtemp(prefix="em3-art-"))
    try:
        return Path(client(store_uri).download_artifacts(run_id, path, str(dst)))
    except (MlflowException, OSError):
        return None


@st.cache_data(ttl=60, show_spinner=False, max_entries=64)
def artifact_json(store_uri: str, run_id: str, path: str) -> Any | None:
    """A JSON artifact parsed, or None when the run has not written it (yet)."""
    local = _download(store_uri, run_id, path)
    if local is None:
        return None
    try:
        return json.loads(local.read_text())
    except (OSError, ValueError):
        return None


@st.cache_data(ttl=60, show_spinner=False, max_entries=32)
def artifact_npz(store_uri: str, run_id: str, path: str) -> dict[str, np.ndarray] | None:
    """An .npz artifact as a dict of arrays, or None when missing or unreadable."""
    local = _download(store_uri, run_id, path)
    if local is None:
        return None
    try:
        with np.load(local, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def find_run_for_job(store_uri: str, job_id: str) -> tuple[str, str] | None:
    """(experiment_id, run_id) of the MLflow run a dashboard job created, via its em3.job tag."""
    table = runs_table(store_uri)
    if table.empty:
        return None
    hit = table[table["job"] == job_id]
    return None if hit.empty else (hit.iloc[0]["experiment_id"], hit.iloc[0]["run_id"])


def forget() -> None:
    """Drop every cached store read (the run list, metric histories, artifacts): called when a job ends, so the
    next page shows the run as it ended, not as it was within a cache's ttl."""
    for cached in (runs_table, run_params, metric_history, artifact_list, _artifact_uris, artifact_json, artifact_npz):
        cached.clear()
