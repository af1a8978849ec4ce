"""The dashboard entry: `python -m streamlit run app/main.py` routes with st.navigation to ../pages/."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:   # streamlit puts app/ (the script's folder) on sys.path, not the repo root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

PAGES = ROOT / "pages"

st.set_page_config(page_title="EM3 Workbench", page_icon=":material/science:", layout="wide")
nav = st.navigation({
    "Train": [
        st.Page(PAGES / "launch.py", title="Launch", icon=":material/rocket_launch:", default=True),
        st.Page(PAGES / "ablations.py", title="Ablations", icon=":material/grid_view:"),
        st.Page(PAGES / "runs.py", title="Runs", icon=":material/monitoring:"),
    ],
    "Look inside": [
        st.Page(PAGES / "attention.py", title="Attention", icon=":material/visibility:"),
        st.Page(PAGES / "alignment.py", title="Alignment", icon=":material/join_inner:"),
        st.Page(PAGES / "recommendations.py", title="Recommendations", icon=":material/movie:"),
    ],
})
with st.sidebar:
    from em3.paths import tracking_uri
    st.caption(f"MLflow store: `{tracking_uri()}`")
nav.run()
