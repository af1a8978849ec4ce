"""Ablations: queue a grid of arms × seeds as one group and compare them as the runs finish."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import launch_form as lf
from app import store, widgets
from app.live import jobs_panel
from app.state import registry
from em3.config import ARM_HELP, RANKERS, ConfigError, field_help, with_arm, with_overrides
from em3.evaluation.views_tables import ABLATION_METRICS, arm_summary, format_summary

st.title(":material/grid_view: Ablations")
st.caption("One click queues every arm × seed on one dataset and ranker as one group (tag `em3.group`); "
           "the table fills in as runs finish.")

with st.expander("Queue a new grid", expanded=True):
    c1, c2 = st.columns(2)
    label = c1.radio("Base configuration", list(lf.DATASETS), key="abl-dataset")
    dataset = lf.DATASETS[label]
    data_dir = ""
    if dataset in ("movielens", "files"):
        data_dir = c1.text_input("Dataset directory", key=f"abl-dir-{dataset}",
                                 value=os.environ.get("EM3_MOVIELENS_DIR", "") if dataset == "movielens" else "")
    ranker = c1.selectbox("Ranker", RANKERS, key="abl-ranker", help=field_help("model.ranker.kind"))
    arms = c2.multiselect("Arms", lf.arm_names(), default=["em3", "em3_no_cic", "id_only"], key="abl-arms",
                          help="\n\n".join(f"**{a}**: {h}" for a, h in ARM_HELP.items()))
    seeds = c2.multiselect("Seeds", list(range(10)), default=[0, 1, 2], key="abl-seeds", help=field_help("train.seed"))
    epochs = c2.number_input("Epochs (blank = preset default)", value=None, step=1, key="abl-epochs",
                             help=field_help("train.epochs"))
    with st.popover("More settings: any other config field, for every run of the grid", width="stretch"):
        more = st.text_area("One `key=value` per line, as `python -m em3 ablate --set key=value` takes them",
                            key=f"abl-more-{dataset}", height=110, placeholder="train.patience=3",
                            help="Applied to every run after its arm's own settings, as the CLI applies --set: a "
                                 "line that changes what defines an arm makes that arm's runs custom (tagged so). "
                                 "Blank lines and `# ...` comments are skipped.")
        try:
            fields = lf.settings_table(lf.base_config(dataset, "em3", data_dir=data_dir), owned=lf.GRID_OWNED)
        except ConfigError:
            fields = []      # no readable dataset directory yet: the Queue button says why
        st.dataframe(fields, hide_index=True, width="stretch", height=200)
    if st.button(f"Queue {len(arms) * len(seeds)} runs", type="primary", disabled=not (arms and seeds), key="abl-go"):
        try:
            base = with_overrides(lf.base_config(dataset, "em3", data_dir=data_dir), {"model.ranker.kind": ranker})
            if epochs is not None:
                base = with_overrides(base, {"train.epochs": int(epochs)})
            extra = lf.parse_more_settings(more, owned=lf.GRID_OWNED)
            cfgs = [with_overrides(with_arm(base, a), {"train.seed": int(s), **extra}) for a in arms for s in seeds]
        except ConfigError as exc:
            st.error(f"Refused: {exc}")
        else:
            group, _ = registry().submit_group(cfgs)
            st.session_state["abl-group"] = group
            st.success(f"Queued group `{group}`: {len(cfgs)} runs"
                       + (", with " + ", ".join(f"`{k}={v}`" for k, v in extra.items()) if extra else "") + ".")

table = store.runs_table(store.uri())
groups = sorted({g for g in table["group"] if g} | {j["group"] for j in registry().jobs() if j["group"]}, reverse=True)
if not groups:
    st.info("No ablation groups yet: queue a grid above (runs carry the `em3.group` tag), or train the demo grid.")
    st.caption(f"The demo grid: the synthetic demo preset once per arm ({', '.join(lf.DEMO_GRID)}; seed 0, DIN), "
               "one after another: whether content helps on cold items, and what each modality adds. "
               "A few minutes per run on a CPU.")
    if st.button("Train the demo grid", key="abl-demo-grid", icon=":material/play_arrow:"):
        group, _ = registry().submit_group(lf.demo_grid(), prefix="demo-grid")
        st.session_state["abl-group"] = group
        st.rerun()   # the group now exists (as jobs): show its live view
    st.stop()
if st.session_state.get("abl-group") not in groups:
    st.session_state["abl-group"] = groups[0]
group = st.selectbox("Group", groups, key="abl-group")


@st.fragment(run_every=2.0 if any(j["group"] == group and j["state"] in ("queued", "running")
                                  for j in registry().jobs()) else None)
def group_view() -> None:
    runs = store.runs_table(store.uri())
    runs = runs[runs["group"] == group]
    done = runs[runs["status"] == "FINISHED"]
    st.caption(f"{len(done)} finished of {len(runs)} runs logged in group `{group}` "
               f"({int((runs['status'] == 'RUNNING').sum())} running, {int((runs['status'] == 'FAILED').sum())} failed).")
    if done.empty:
        st.info("No finished run in this group yet: the table appears when the first one finishes.")
        return
    summary = arm_summary(done, metrics=ABLATION_METRICS, baseline="em3")
    st.dataframe(format_summary(summary), width="stretch")
    if not any(row == "em3" or row.startswith("em3 · ") for row in summary.index):
        st.caption("Δ columns need an `em3` arm in the group.")
    if (done["arm"] == "custom").any():
        st.caption("**custom** rows: runs whose config contradicts their arm on an arm-defining knob; "
                   "they are kept apart from the arm they started from.")
    metric = st.radio("Chart metric", ABLATION_METRICS, horizontal=True, key="abl-metric")
    # points, not bars: the axis is zoomed to the differences, and a bar cut off below would overstate them
    fig = go.Figure(go.Scatter(x=list(summary.index), y=summary[f"{metric} mean"], mode="markers",
                               marker=dict(size=13), hovertemplate="%{x}: %{y:.4f}<extra></extra>",
                               error_y=dict(type="data", array=np.nan_to_num(summary[f"{metric} std"].to_numpy()))))
    fig.update_layout(title=f"{metric}: mean ± std over seeds", height=340, margin=dict(l=10, r=10, t=40, b=10),
                      yaxis=dict(range=_range(summary, metric)))
    widgets.plot(fig, key="abl-bar")
    with st.expander("Runs of the group"):
        st.dataframe(pd.DataFrame(runs[["name", "arm_label", "ranker", "status", *ABLATION_METRICS]]
                                  .rename(columns={"arm_label": "arm"})), hide_index=True)


def _range(summary: pd.DataFrame, metric: str) -> list[float] | None:
    lo = (summary[f"{metric} mean"] - summary[f"{metric} std"].fillna(0)).min()
    hi = (summary[f"{metric} mean"] + summary[f"{metric} std"].fillna(0)).max()
    if not np.isfinite(lo) or not np.isfinite(hi):
        return None
    pad = max((hi - lo) * 0.5, 0.005)
    return [lo - pad, hi + pad]


group_view()
st.subheader("Jobs of this group")
jobs_panel(key="abl", group=group)
