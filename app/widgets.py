"""Shared Streamlit widgets: run pickers, MLflow links, 'what is missing' notes and plotly curves."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from app import store


def runs_or_info(*, what: str = "runs") -> pd.DataFrame | None:
    """The runs table, or None after an st.info when the store holds no runs."""
    table = store.runs_table(store.uri())
    if table.empty:
        st.info(f"No {what} in the MLflow store yet ({store.uri()}). Start one on the **Launch** page.")
        return None
    return table


def run_picker(table: pd.DataFrame, *, label: str, key: str, index: int = 0) -> pd.Series | None:
    """A selectbox over runs (newest first); returns the chosen row."""
    if table.empty:
        return None
    ids = list(table["run_id"])
    labels = {r["run_id"]: store.run_label(r) for _, r in table.iterrows()}
    chosen = st.selectbox(label, ids, index=min(index, len(ids) - 1), key=key, format_func=labels.get)
    return table[table["run_id"] == chosen].iloc[0]


def runs_with_artifact(table: pd.DataFrame, path: str) -> pd.DataFrame:
    """Runs that have written `path` (e.g. explain/embeddings.npz)."""
    uri = store.uri()
    keep = [store.has_artifact(uri, rid, path) for rid in table["run_id"]]
    return table[keep]


def explain_or_info(table: pd.DataFrame, path: str) -> pd.DataFrame | None:
    """Runs holding an explain artifact; st.info naming what is missing when none does."""
    found = runs_with_artifact(table[table["status"] == "FINISHED"], path)   # explain/ is written at the end
    if found.empty:
        running = int((table["status"] == "RUNNING").sum())
        extra = f" {running} run(s) still running: artifacts appear when a run finishes." if running else ""
        st.info(f"No run has `{path}` yet (failed, cancelled, older or still-running runs do not).{extra}")
        return None
    return found


def explained_runs_or_stop(path: str) -> pd.DataFrame:
    """Finished runs holding explain artifact `path`; stops the page with a note saying what is missing."""
    table = runs_or_info()
    found = None if table is None else explain_or_info(table, path)
    if found is None:
        st.stop()
    return found


def pick_explained_run(path: str, *, key: str) -> pd.Series:
    """A run picker over the runs holding `path`, with the chosen run's status note."""
    run = run_picker(explained_runs_or_stop(path), label="Run", key=key)
    run_status_note(run)
    return run


def mlflow_link(experiment_id: str, run_id: str) -> None:
    st.markdown(f"[Open run `{run_id[:8]}` in the MLflow UI]({store.ui_url(experiment_id, run_id)})",
                help=store.mlflow_ui_hint(store.uri()))


def run_status_note(row: pd.Series) -> None:
    """Say what is special about a run: interrupted (with Resume), failed (with its error), running, older config."""
    if str(row.get("interrupted", "")) == "true" and row["status"] != "RUNNING":
        st.warning(f"Run interrupted: its process ended without finishing it ({row['error'] or 'no message'}).")
        resume_button(row)
    elif row["status"] == "FAILED":
        st.error(f"Run failed: {row['error'] or 'no em3.error tag recorded'}")
    elif row["status"] == "RUNNING":
        st.info("This run is still running: final metrics and explain/ artifacts appear when it finishes.")
    elif row["status"] == "KILLED":
        st.warning("This run was cancelled (KILLED): it may lack final metrics and artifacts.")
    from em3.config import CONFIG_VERSION
    if row["config_version"] and str(row["config_version"]) != str(CONFIG_VERSION):
        st.info(f"Run from config version {row['config_version']} (current {CONFIG_VERSION}): "
                "some fields may be missing or differently named.")


def resume_button(row: pd.Series) -> None:
    """A Resume button: queue the run's continuation from its last checkpoint in this server's job registry."""
    if not st.button("Resume", key=f"resume-{row['run_id']}", help="Continue from the run's last checkpoint"):
        return
    from app.state import registry
    from em3.config import ConfigError, from_dict
    logged = store.artifact_json(store.uri(), row["run_id"], "config.json")
    try:
        cfg = from_dict(logged) if logged is not None else None
    except ConfigError as exc:
        st.error(f"Cannot resume: its config.json is from another version ({exc})")
        return
    if cfg is None:
        st.error("Cannot resume: the run has no config.json artifact")
        return
    job_id = registry().submit(cfg, name=f"resume {row['name'] or row['run_id'][:8]}", resume_run_id=row["run_id"])
    st.success(f"Queued job `{job_id}`: run {row['run_id'][:8]} continues from its last checkpoint (see Launch).")


def split_final(df: pd.DataFrame, x: str = "step") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-epoch points, final point) of a logged series. A finished run logs its final evaluation of the best
    model at the last epoch's step (em3/training/run.py), so a val/* or align/* series ends with two values at
    one step: the last is that final value, not an epoch's. Without such a repeat the final part is empty."""
    if len(df) >= 2 and df[x].iloc[-1] == df[x].iloc[-2]:
        return df.iloc[:-1], df.iloc[-1:]
    return df, df.iloc[:0]


def ema_smooth(values: Iterable[float], weight: float) -> np.ndarray:
    """TensorBoard's curve smoothing: an exponential moving average with weight `weight` in [0, 1), debiased so
    the first points are not pulled towards 0 (each value divided by 1 - weight^n after n finite points).
    Non-finite values stay as they are and do not enter the average. weight 0 returns the values."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out = np.asarray(list(values), dtype=float).copy()
    last, n = 0.0, 0
    for i, v in enumerate(out):
        if not np.isfinite(v):
            continue
        last, n = last * weight + (1.0 - weight) * v, n + 1
        out[i] = last / (1.0 - weight ** n)
    return out


def curves(series: Iterable[tuple[str, pd.DataFrame]], *, title: str, x: str = "step", x_title: str | None = None,
           y_title: str = "", height: int = 300, hlines: Iterable[tuple[float, str]] = (),
           final_x: Mapping[str, float] | None = None, smoothing: float = 0.0) -> go.Figure:
    """Overlaid line curves from (name, frame with columns x/value) pairs, plus labelled reference lines.
    A series' final evaluation (split_final) is a star of the line's colour, not a point on the line: at
    final_x[name] where given (the run's best epoch, whose model it evaluates), else where it was logged.
    With `smoothing` > 0 each line is its ema_smooth, drawn over the raw values in a faint trace of its colour."""
    fig = go.Figure()
    palette = px.colors.qualitative.Plotly
    for n, (name, df) in enumerate(series):
        if df.empty:
            continue
        line, final = split_final(df, x)
        colour = palette[n % len(palette)]
        mode = "lines+markers" if len(line) < 30 else "lines"
        y = line["value"]
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=line[x], y=y, mode=mode, name=f"{name} (raw)", legendgroup=name,
                                     showlegend=False, opacity=0.3, line=dict(color=colour, width=1),
                                     hovertemplate="raw: %{y:.4f}<extra></extra>"))
            y = ema_smooth(y, smoothing)
        fig.add_trace(go.Scatter(x=line[x], y=y, mode=mode, name=name, line=dict(color=colour), legendgroup=name))
        if not final.empty:
            at = (final_x or {}).get(name)
            fig.add_trace(go.Scatter(x=final[x] if at is None else [at], y=final["value"], mode="markers",
                                     legendgroup=name, name=f"{name}: final (best model)",
                                     marker=dict(symbol="star", size=13, color=colour,
                                                 line=dict(width=1, color="black")),
                                     hovertemplate="final evaluation of the best model: %{y:.4f}<extra></extra>"))
    for value, label in hlines:
        fig.add_hline(y=value, line_dash="dot", annotation_text=label, annotation_position="top left")
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title=x_title or x, yaxis_title=y_title,
                      legend=dict(orientation="h", yanchor="top", y=-0.25))   # below the axis title, not on it
    return fig


def time_parts_chart(parts: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """{run label: {part: seconds}} -> one horizontal bar per run, its timed parts stacked in order."""
    names = list(dict.fromkeys(p for run in parts.values() for p in run))        # first-seen order
    labels = list(parts)
    fig = go.Figure([go.Bar(name=name, y=labels, x=[parts[r].get(name, 0.0) for r in labels], orientation="h",
                            hovertemplate="%{y}: " + name + " %{x:.1f} s<extra></extra>") for name in names])
    fig.update_layout(barmode="stack", height=180 + 40 * len(labels), margin=dict(l=10, r=10, t=40, b=10),
                      yaxis=dict(autorange="reversed"),                                 # the first run on top
                      legend=dict(orientation="h", traceorder="normal", yanchor="top", y=-0.25, x=0),  # below the axis
                      title="Where each run's time went (seconds)")
    return fig


def plot(fig: Any, *, key: str | None = None) -> None:
    st.plotly_chart(fig, width="stretch", key=key)


def image_or_note(image: Any, *, caption: str, width: int | None = None) -> None:
    if image is None:
        st.caption(f"(no image) {caption}")
    else:
        st.image(image, caption=caption, width=width or "content")
