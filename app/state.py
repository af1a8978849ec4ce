"""The process-wide job registry: one per server, shared by every page, refresh and browser tab."""
from __future__ import annotations

import os

import streamlit as st

from app import store
from app.jobs import JobRegistry, default_train_fn, warm_imports


DEFAULT_PRESET = "demo"   # what Start trains with the Launch page's defaults


def _warmup() -> None:
    """While the user reads the page: open the MLflow store (seconds: schema checks), import the trainer and
    build the default preset's data and feature cache (~15 s on 2 cores the first time, then a cache hit),
    so the first Start with the defaults reaches its first step in about a second. EM3_WARM_DEMO=0 skips
    the data part (the test suite does: its servers train other presets and share the 2 cores)."""
    store.client(store.uri())
    warm_imports()
    if os.environ.get("EM3_WARM_DEMO", "1") != "0":
        from em3.config import preset
        from em3.data.prepare import prepare

        prepare(preset(DEFAULT_PRESET))


def make_registry() -> JobRegistry:
    """The server's registry. When a job ends, the pages' cached store reads (run list, artifacts) are dropped:
    a page opened right after "finished" must not show the run as RUNNING, or its artifacts as missing. When a
    job's MLflow run is created, the cached run list is dropped: the Runs page must list it while it trains."""
    return JobRegistry(train_fn=default_train_fn, warmup=_warmup, on_end=lambda job: store.forget(),
                       on_run=lambda job: store.runs_table.clear())


@st.cache_resource(show_spinner=False)
def registry() -> JobRegistry:
    return make_registry()
