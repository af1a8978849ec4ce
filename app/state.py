"""The process-wide job registry: one per server, shared by every page, refresh and browser tab."""
from __future__ import annotations

import streamlit as st

from app import store
from app.jobs import JobRegistry, default_train_fn, warm_imports


DEFAULT_PRESET = "demo"   # what Start trains with the Launch page's defaults


def _warmup() -> None:
    """While the user reads the page: open the MLflow store (seconds: schema checks), import the trainer,
    and generate the default preset's data and feature cache (~15 s on 2 cores the first time, then a
    cache hit), so the first Start with the defaults reaches its first step in about a second."""
    store.client(store.uri())
    warm_imports()
    from em3.config import preset
    from em3.data.prepare import prepare

    prepare(preset(DEFAULT_PRESET))


@st.cache_resource(show_spinner=False)
def registry() -> JobRegistry:
    from em3.training.runtime import keep_heap

    keep_heap()   # before the worker thread's first allocation, so its large tensors come from the one heap
    return JobRegistry(train_fn=default_train_fn, warmup=_warmup)
