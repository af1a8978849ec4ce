"""The process-wide job registry: one per server, shared by every page, refresh and browser tab."""
from __future__ import annotations

import streamlit as st

from app import store
from app.jobs import JobRegistry, default_train_fn, warm_imports


def _warmup() -> None:
    """Open the MLflow store (seconds: schema checks) and import the trainer while the user reads the page."""
    store.client(store.uri())
    warm_imports()


@st.cache_resource(show_spinner=False)
def registry() -> JobRegistry:
    return JobRegistry(train_fn=default_train_fn, warmup=_warmup)
