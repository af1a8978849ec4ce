"""The process-wide job registry: one per server, shared by every page, refresh and browser tab."""
from __future__ import annotations

import os
import threading

import streamlit as st

from app import store
from app.jobs import JobRegistry, default_train_fn, warm_imports


DEFAULT_PRESET = "demo"   # what Start trains with the Launch page's defaults


_WARM = threading.Lock()
_warmed: set[str] = set()


def warm_up() -> None:
    """Open the MLflow store (seconds: schema creation on a new store), import the trainer (torch,
    transformers, peft: ~5 s) and build the default preset's data and feature cache (~15 s on 2 cores the
    first time, then a cache hit), so the first Start with the defaults reaches its first step in about a
    second. `make run` (app/serve.py) runs it before the server listens; the registry's worker calls it
    again before its first job, which then waits for what is still in progress and redoes nothing.
    EM3_WARM_DEMO=0 skips the data part (the test suite does: its servers train other presets on 2 cores)."""
    with _WARM:
        uri = store.uri()
        if uri not in _warmed:
            store.client(uri).search_experiments()      # creates the schema of a new store
            warm_imports()
            if os.environ.get("EM3_WARM_DEMO", "1") != "0":
                from em3.config import preset
                from em3.data.prepare import prepare

                prepare(preset(DEFAULT_PRESET))
            _warmed.add(uri)


def make_registry() -> JobRegistry:
    """The server's registry. When a job ends, the pages' cached store reads (run list, artifacts) are dropped:
    a page opened right after "finished" must not show the run as RUNNING, or its artifacts as missing. When a
    job's MLflow run is created, the cached run list is dropped: the Runs page must list it while it trains."""
    return JobRegistry(train_fn=default_train_fn, warmup=warm_up, on_end=lambda job: store.forget(),
                       on_run=lambda job: store.runs_table.clear())


@st.cache_resource(show_spinner=False)
def registry() -> JobRegistry:
    return make_registry()
