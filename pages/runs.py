"""Runs: filter the MLflow runs, overlay metric curves, diff parameters, compare final metrics."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import store, widgets
from em3.evaluation.views_reference import REFERENCES, references_for
from em3.evaluation.views_tables import efficiency_column, metric_text, param_diff, time_parts

st.title(":material/monitoring: Runs")
st.caption(store.mlflow_ui_hint(store.uri()))
table = widgets.runs_or_info()
if table is None:
    st.stop()

filters = st.columns(5)
shown = table
for col, (field, label, key) in zip(filters, [("dataset", "Dataset", "dataset"), ("arm_label", "Arm", "arm"),
                                              ("group", "Group", "group"), ("status", "Status", "status"),
                                              ("kind", "Kind", "kind")]):
    options = sorted({v for v in table[field] if v})
    picked = col.multiselect(label, options, key=f"runs-filter-{key}")
    if picked:
        shown = shown[shown[field].isin(picked)]

st.dataframe(shown[["name", "status", "dataset", "arm_label", "ranker", "group", "kind", "test/auc", "test/gauc",
                    "test/logloss", "test_cold/auc", "start", "run_id"]].rename(columns={"arm_label": "arm"}),
             hide_index=True, width="stretch", height=260)
if (shown["arm"] == "custom").any():
    st.caption("**custom**: the run's config contradicts its arm on an arm-defining knob (history strategy, CIC on/off, "
               "fusion mode, modalities, content): it is not grouped with the arm it started from (shown in brackets).")
if shown.empty:
    st.info("No run matches these filters.")
    st.stop()

labels = {r["run_id"]: store.run_label(r) for _, r in shown.iterrows()}
chosen = st.multiselect("Compare runs", list(labels), default=list(labels)[:2], format_func=labels.get, key="runs-pick")
if not chosen:
    st.info("Select one or more runs to compare.")
    st.stop()
sel = shown[shown["run_id"].isin(chosen)]
for _, row in sel.iterrows():
    if row["status"] != "FINISHED" or (row["config_version"] and row["config_version"] != "1"):
        with st.container(border=True):
            st.caption(labels[row["run_id"]])
            widgets.run_status_note(row)

# metric curves (step or epoch metrics), overlaid across the selected runs
keys = sorted(set().union(*[set(m) for m in sel["_metrics"]]))
curve_keys = [k for k in keys if k.split("/")[0] in ("train", "val", "align", "fusion", "time")]
picked = st.multiselect("Curves", curve_keys, default=[k for k in ("train/loss", "val/auc") if k in curve_keys],
                        key="runs-curves")
uri = store.uri()
per_step = [k for k in picked if k.split("/")[0] == "train" and set(sel["kind"]) != {"topk"}]
smoothing = st.slider("Smoothing of per-step curves", 0.0, 0.99, 0.6, 0.01, key="runs-smoothing",
                      help="An exponential moving average, as in TensorBoard (0 = the logged values). The raw values "
                           "stay drawn, faint. Per-epoch curves are never smoothed.") if per_step else 0.0
cols = st.columns(2)
names = {rid: labels[rid].split(" · ")[0] + f" ({rid[:6]})" for rid in chosen}
best_epochs = {names[r["run_id"]]: r["_metrics"]["best_epoch"] for _, r in sel.iterrows()   # where a final star goes
               if np.isfinite(float(r["_metrics"].get("best_epoch") or np.nan))}
for i, key in enumerate(picked):
    series = [(names[rid], store.metric_history(uri, rid, key)) for rid in chosen]
    with cols[i % 2]:
        # a CTR run logs train/* per step and the rest once an epoch; a top-K run logs everything once an epoch
        per_epoch = key not in per_step
        widgets.plot(widgets.curves(series, title=key, x="step", x_title="epoch" if per_epoch else "step",
                                    final_x=best_epochs if per_epoch else None,
                                    smoothing=0.0 if per_epoch else smoothing), key=f"runs-curve-{key}")

# final metrics with reference lines where metric and protocol match
st.subheader("Final metrics")
finals = pd.DataFrame({labels[r["run_id"]]: r["_metrics"] for _, r in sel.iterrows()}).T
final_keys = [k for k in finals.columns if k.split("/")[0] in ("test", "test_cold", "val", "val_cold", "perf", "params", "time")
              or k == "best_epoch"]
if final_keys:
    st.dataframe(finals[sorted(final_keys)].T.astype(float).style.format(metric_text), width="stretch")
    bar_metric = st.selectbox("Bar chart of", sorted(final_keys), key="runs-bar",
                              index=sorted(final_keys).index("test/auc") if "test/auc" in final_keys else 0)
    fig = go.Figure(go.Bar(x=[s.split(" · ")[0] for s in finals.index], y=finals[bar_metric]))
    kinds = {k for k in sel["kind"] if k} or {"ctr"}
    refs = [r for kind in kinds for r in references_for(bar_metric, kind)]
    for r in refs:
        fig.add_hline(y=r.value, line_dash="dot", annotation_text=f"{r.model} {r.dataset}", annotation_position="top left")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), title=bar_metric)
    widgets.plot(fig, key="runs-bar-fig")
    if refs:
        st.caption("Reference lines: " + "; ".join(r.label for r in refs))
else:
    st.info("The selected runs have no final metrics yet (running, failed or cancelled).")
with st.expander("Published reference numbers and their protocols"):
    st.dataframe(pd.DataFrame([{"metric": r.metric, "value": r.value, "model": r.model, "dataset": r.dataset,
                                "applies to": f"em3.kind={r.kind}" if r.drawn else "context only",
                                "protocol": r.protocol} for r in REFERENCES]), hide_index=True)

st.subheader("Efficiency")
st.caption("What each run logged about its cost; 'not logged' for runs from before a figure existed.")
efficiency = pd.DataFrame({labels[r["run_id"]]: efficiency_column(
    r["_metrics"], {"em3.device": r["device"], "em3.memory_kind": r["memory_kind"]}) for _, r in sel.iterrows()})
st.dataframe(efficiency, width="stretch")
timed = {labels[r["run_id"]]: time_parts(r["_metrics"]) for _, r in sel.iterrows()}
timed = {label: parts for label, parts in timed.items() if parts}
if timed:
    widgets.plot(widgets.time_parts_chart(timed), key="runs-time-fig")
    st.caption("The run's own timers, all epochs together: setup (loading the data and the feature cache, which a "
               "machine's first run of a dataset builds, and building the model); training; validation; the "
               "per-epoch extras (each epoch's alignment and evenness metrics and its checkpoint); the final evaluation of every split; the top-K "
               "ranking of the catalogue; the explain artifacts. The process's start-up is not among them, nor "
               "are parts that a run from before a timer existed did not log.")

st.subheader("Parameters that differ")
diff = param_diff({labels[r["run_id"]]: store.run_params(uri, r["run_id"]) for _, r in sel.iterrows()})
if len(chosen) < 2:
    st.caption("Select two or more runs to see a parameter diff.")
elif diff.empty:
    st.caption("The selected runs have identical parameters.")
else:
    st.dataframe(diff, width="stretch")

st.subheader("Per run")
for _, row in sel.iterrows():
    c1, c2 = st.columns([2, 1])
    with c1:
        widgets.mlflow_link(row["experiment_id"], row["run_id"])
    cfg = store.artifact_json(uri, row["run_id"], "config.json")
    if cfg is None:
        c2.caption(f"{row['run_id'][:8]}: no config.json artifact")
    else:
        c2.download_button(f"config.json ({row['run_id'][:8]})", json.dumps(cfg, indent=2),
                           file_name=f"config-{row['run_id'][:8]}.json", mime="application/json",
                           key=f"dl-{row['run_id']}")
