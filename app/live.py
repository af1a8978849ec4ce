"""The live view of dashboard jobs: progress bar, loss and validation curves, cancel, error, MLflow link.

The view polls while a job is active, in the server process that also trains the job, and on a one-machine
setup (`make run`) the browser draws on the same cores. So a poll does little: the progress line every
REFRESH_S, the charts rebuilt only when their series changed and at most every CHART_REFRESH_S (in between
the same figure objects are sent again), and a job's MLflow run looked up once (docs/RESULTS.md, "What
watching costs").
"""
from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from app import store, widgets
from app.jobs import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING
from app.state import registry

STATE_ICON = {QUEUED: ":material/hourglass_top:", RUNNING: ":material/play_circle:", FINISHED: ":material/check_circle:",
              FAILED: ":material/error:", CANCELLED: ":material/block:"}
VAL_KEYS = ("val/auc", "val/gauc", "val/logloss")
REFRESH_S = 2.0          # the job cards' poll while any job is queued or running
CHART_REFRESH_S = 5.0    # a running job's charts take new points at most this often
_RUN_OF_JOB: dict[tuple[str, str], tuple[str, str]] = {}   # (store, job id) -> (experiment, run id): never changes


def _eta(seconds: float | None) -> str:
    if not seconds or seconds != seconds:
        return "–"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def progress_line(job: dict[str, Any]) -> tuple[float, str]:
    """(fraction done, progress text) of a job; the text as
    'epoch 1/2 · step 3/10 · 850 samples/s · ≈ 0m12s of training to epoch 2 · loss 0.6931'."""
    p = job["progress"]
    if job["state"] == QUEUED:
        return 0.0, "queued" + (" (the worker is still importing torch; first start only)" if registry().warming else "")
    if job["state"] != RUNNING:
        return (1.0 if job["state"] == FINISHED else 0.0), job["state"]
    epochs, epoch = p.get("epochs") or 0, p.get("epoch") or 0
    steps, step = p.get("steps_per_epoch") or 0, p.get("step") or 0
    frac = ((max(epoch - 1, 0) + (step / steps if steps else 0)) / epochs) if epochs else 0.0
    if p.get("phase") in ("eval", "explain", "done"):
        frac = 1.0   # training steps are over; evaluation and artifacts follow
    if p.get("phase") == "cache":
        steps = 0    # the cache's step/steps are items encoded, said by its message
    loss = p.get("loss")
    parts = [f"{p.get('phase', 'starting')}"]
    if epochs:
        parts.append(f"epoch {epoch}/{epochs}")
    if steps:
        parts.append(f"step {step}/{steps}")
    if p.get("samples_per_s"):
        parts.append(f"{p['samples_per_s']:.0f} samples/s")
    # an estimate to the epoch cap: early stopping can end sooner, evaluation follows (em3/training/eta.py)
    parts.append(f"≈ {_eta(p.get('eta_s'))} of training" + (f" to epoch {epochs}" if epochs else ""))
    if loss is not None and loss == loss:
        parts.append(f"loss {loss:.4f}")
    if p.get("message"):
        parts.append(str(p["message"]))
    return min(max(frac, 0.0), 1.0), " · ".join(parts)


def first_metric_note(job: dict[str, Any]) -> str:
    """' · first live metric after 1.9 s' (from the Start click), or for a job that waited behind others
    ' · queued 115.3 s · first live metric 7.0 s after it started': a grid's later jobs are not slow to start."""
    first = job.get("first_metric_s")
    if not first:
        return ""
    waited = (job["started"] - job["submitted"]) if job.get("started") else 0.0
    if waited < 1.0:
        return f" · first live metric after {first:.1f} s"
    return f" · queued {waited:.1f} s · first live metric {first - waited:.1f} s after it started"


def job_card(job: dict[str, Any], *, key: str, expanded: bool) -> None:
    """One job: state, device, progress, live curves, cancel button, error or MLflow link."""
    title = f"{job['name']} — {job['state']}"
    with st.expander(title, expanded=expanded, icon=STATE_ICON.get(job["state"])):
        frac, line = progress_line(job)
        st.progress(frac, text=line)
        cols = st.columns([3, 1])
        cols[0].caption(f"job `{job['id']}` · arm `{job['arm']}` · device: {job['device'] or 'not started'}"
                        + first_metric_note(job))
        if job["state"] in (QUEUED, RUNNING):
            if cols[1].button("Cancel", key=f"cancel-{key}-{job['id']}", disabled=job["cancel_requested"]):
                registry().cancel(job["id"])
                st.toast(f"Cancel requested for {job['name']}")
        if job["state"] == FAILED:
            st.error(f"Run failed:\n\n```\n{job['error']}\n```")
        if job["losses"] or job["epochs"]:
            loss_fig, val_fig = _charts(job)
            left, right = st.columns(2)
            with left:
                widgets.plot(loss_fig, key=f"loss-{key}-{job['id']}")
            with right:
                if val_fig is not None:
                    widgets.plot(val_fig, key=f"val-{key}-{job['id']}")
                else:   # an empty chart would read as 'no validation'
                    st.caption("Validation (per epoch): AUC, gAUC and logloss appear here after the first epoch.")
        found = _run_of_job(job)
        if found:
            widgets.mlflow_link(*found)
        if job["state"] == FINISHED and job["metrics"]:
            shown = {k: v for k, v in job["metrics"].items() if k.split("/")[0] in ("test", "test_cold", "val", "val_cold")}
            st.dataframe(pd.DataFrame([shown]), hide_index=True)


def _charts(job: dict[str, Any]) -> tuple[Any, Any | None]:
    """The job's figures, kept per browser session (st.session_state) between polls."""
    return chart_figures(job, st.session_state.setdefault("_live_charts", {}), now=time.time())


def chart_figures(job: dict[str, Any], cache: dict[str, Any], *, now: float) -> tuple[Any, Any | None]:
    """(loss figure, validation figure or None) of a job. Rebuilt only when a series grew or the state changed,
    and while the job runs at most every CHART_REFRESH_S; otherwise the figures held in `cache` come back."""
    seen = (len(job["losses"]), len(job["epochs"]), job["state"])
    held = cache.get(job["id"])
    if held is not None and (held["seen"] == seen or (
            job["state"] == RUNNING and held["seen"][2] == RUNNING and now - held["at"] < CHART_REFRESH_S)):
        return held["figs"]
    losses = pd.DataFrame(job["losses"], columns=["step", "value"])
    loss_fig = widgets.curves([("train/loss", losses)], title="Training loss (live)")
    epochs = pd.DataFrame(job["epochs"])
    series = [(k, epochs[["epoch", k]].rename(columns={k: "value"})) for k in VAL_KEYS if k in epochs]
    val_fig = widgets.curves(series, title="Validation (per epoch)", x="epoch") if series else None
    cache[job["id"]] = {"seen": seen, "at": now, "figs": (loss_fig, val_fig)}
    return cache[job["id"]]["figs"]


def _run_of_job(job: dict[str, Any]) -> tuple[str, str] | None:
    """(experiment id, run id) of the MLflow run a job created, looked up in the store until found."""
    where = (store.uri(), job["id"])
    if where in _RUN_OF_JOB:
        return _RUN_OF_JOB[where]
    if not (job["run_id"] or job["state"] in (RUNNING, FINISHED, FAILED, CANCELLED)):
        return None
    found = store.find_run_for_job(*where)
    if found:
        _RUN_OF_JOB[where] = found
    return found


def jobs_panel(*, key: str, group: str | None = None, limit: int = 20) -> None:
    """All dashboard jobs (or one group's), newest first; refreshes itself every REFRESH_S while any is active."""
    jobs = [j for j in registry().jobs() if group is None or j["group"] == group]
    active = any(j["state"] in (QUEUED, RUNNING) for j in jobs)

    @st.fragment(run_every=REFRESH_S if active else None)
    def _panel() -> None:
        current = [j for j in registry().jobs() if group is None or j["group"] == group][:limit]
        if active and not any(j["state"] in (QUEUED, RUNNING) for j in current):
            st.rerun()   # all done: redraw the whole page once (tables, links) and stop polling
        if not current:
            st.caption("No dashboard jobs yet in this server process.")
            return
        counts = {s: sum(j["state"] == s for j in current) for s in STATE_ICON}
        st.caption(" · ".join(f"{n} {s}" for s, n in counts.items() if n)
                   + f" · updated {time.strftime('%H:%M:%S')}")
        for i, job in enumerate(current):
            job_card(job, key=key, expanded=(i == 0 or job["state"] == RUNNING))
    _panel()
