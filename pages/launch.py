"""Launch: pick a dataset, arm and ranker, edit the main knobs, start a run and watch it train."""
from __future__ import annotations

import os

import streamlit as st

from app import launch_form as lf
from app import store
from app.live import jobs_panel
from app.state import registry
from em3.arms import arm_conflicts, arm_label, arm_of
from em3.config import ARM_HELP, RANKERS, ConfigError, field_help

st.title(":material/rocket_launch: Launch a run")
st.caption("Defaults and help come from the config dataclasses; the config itself validates every value. "
           + store.mlflow_ui_hint(store.uri()))

top = st.columns([2, 2, 1])
label = top[0].radio("Dataset", list(lf.DATASETS), key="launch-dataset",
                     help="\n\n".join(f"**{k}**: {lf.DATASET_HELP[v]}" for k, v in lf.DATASETS.items()))
dataset = lf.DATASETS[label]
arm = top[1].selectbox("Arm", lf.arm_names(), index=lf.arm_names().index("em3"), key="launch-arm",
                       help=field_help("model.arm"))
top[1].caption(ARM_HELP[arm])
ranker = top[2].selectbox("Ranker", RANKERS, key="launch-ranker", help=field_help("model.ranker.kind"))

data_dir = ""
if dataset in ("movielens", "files"):
    default_dir = os.environ.get("EM3_MOVIELENS_DIR", "") if dataset == "movielens" else ""
    data_dir = st.text_input("Dataset directory", value=default_dir, key=f"launch-dir-{dataset}",
                             help=lf.DATASET_HELP[dataset] + " The path is only read, never executed.")

try:
    base = lf.base_config(dataset, arm, data_dir=data_dir)
except ConfigError as exc:
    st.error(str(exc))
    base = None

if base is not None:
    defaults = lf.knob_defaults(base)
    with st.form(f"launch-form-{dataset}-{arm}"):
        st.subheader("Main knobs")
        st.caption(f"The defaults are what arm **{arm}** means. Changing an arm-defining knob (history strategy, "
                   "CIC on/off) away from it runs a **custom** config, tagged as such, not as the arm.")
        values = {}
        cols = st.columns(4)
        for i, (key, name, kind) in enumerate(lf.KNOBS):
            col, default, help_text = cols[i % 4], defaults[key], lf.knob_help(key)
            wkey = f"knob-{dataset}-{arm}-{key}"   # per dataset/arm: their defaults differ
            if kind == "choice":
                options = list(lf.CHOICES[key])
                values[key] = col.selectbox(name, options, index=options.index(default), help=help_text, key=wkey)
            elif kind == "multi":
                chosen = col.multiselect(name, list(lf.CHOICES[key]), default=str(default).split(","),
                                         help=help_text, key=wkey)
                values[key] = tuple(chosen)
            elif kind == "int":
                values[key] = int(col.number_input(name, value=int(default), step=1, help=help_text, key=wkey))
            else:
                values[key] = float(col.number_input(name, value=float(default), format="%g",
                                                     step=float(default) / 10 or 0.1, help=help_text, key=wkey))
        with st.expander("More settings: any other config field"):
            more = st.text_area(
                "One `key=value` per line, as `python -m em3 train --set key=value` takes them",
                key=f"launch-more-{dataset}-{arm}", height=110, placeholder="train.patience=3\nspeed.threads=1",
                help="Applied after the main knobs. Blank lines and `# ...` comments are skipped. The config "
                     "validates each value when you press Start, and a refusal names the field.")
            st.caption(f"The fields and their values in this preset with arm **{arm}** (the main knobs above "
                       "and the dataset, arm and ranker pickers are left out; search with the table's magnifier):")
            st.dataframe(lf.settings_table(base), hide_index=True, width="stretch", height=240)
        submitted = st.form_submit_button("Start", type="primary")
    if submitted:
        try:
            cfg = lf.build_config(dataset, arm, ranker=ranker, knobs=values, data_dir=data_dir, more=more)
        except ConfigError as exc:
            st.error(f"Refused: {exc}")
        else:
            job_id = registry().submit(cfg, tags={"em3.launched_from": "dashboard"})
            conflicts = arm_conflicts(cfg)
            if conflicts:
                st.warning(f"These knobs contradict what arm **{arm}** means, so the run is tagged **custom** "
                           f"(em3.arm = custom, em3.base_arm = {arm}) and is not grouped with {arm}: "
                           + "; ".join(conflicts) + ".")
            extra = lf.parse_more_settings(more)
            st.success(f"Queued job `{job_id}` ({arm_label(arm_of(cfg), arm)}, {lf.dataset_tag(cfg)})"
                       + (": with " + ", ".join(f"`{k}={v}`" for k, v in extra.items()) if extra else "") + ".")

st.subheader("Queue")
jobs_panel(key="launch")
