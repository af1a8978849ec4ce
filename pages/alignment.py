"""Alignment: each item's content embedding next to its ID embedding, for two runs side by side."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from app import store, widgets
from app.run_data import attribute_colours, colour_columns, run_data
from em3.evaluation.views_alignment import link_segments, pair_cosines, project_pairs

st.title(":material/join_inner: Content vs ID alignment")
st.caption("CIC pulls each item's content embedding towards its own ID embedding: linked pairs get shorter, "
           "matched cosines move right of the random ones.")
found = widgets.explained_runs_or_stop("explain/embeddings.npz")
c = st.columns([1, 1, 1])
method = c[0].radio("Projection", ["pca", "tsne"], horizontal=True, key="al-method",
                    format_func={"pca": "PCA", "tsne": "t-SNE"}.get)
max_items = c[1].number_input("Items shown (sampled)", value=300, min_value=10, max_value=2000, step=50, key="al-n")
uri = store.uri()


def show_run(row: pd.Series, *, key: str) -> None:
    widgets.run_status_note(row)
    emb = store.artifact_npz(uri, row["run_id"], "explain/embeddings.npz")
    if emb is None or not {"item_index", "content", "id"} <= set(emb):
        st.info("explain/embeddings.npz is unreadable or lacks item_index/content/id.")
        return
    idx, content, ids = emb["item_index"], emb["content"], emb["id"]
    if {"content_aligned", "id_aligned"} <= set(emb):   # CIC's shared space: projected + L2-normalised
        content, ids = emb["content_aligned"], emb["id_aligned"]
    if content.ndim != 2 or content.shape[1] == 0:
        st.info("This run has no content embeddings (an id_only arm): nothing to align.")
        return
    real = idx > 0                                       # row 0 is padding
    idx, content, ids = idx[real], content[real], ids[real]
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(idx), size=min(int(max_items), len(idx)), replace=False))
    idx, content, ids = idx[keep], content[keep], ids[keep]
    data, why = run_data(row["run_id"])
    titles = [data.title(i) for i in idx] if data else [f"item {int(i)}" for i in idx]
    options = colour_columns(data) if data else []
    colour_name = st.selectbox("Colour by", options, key=f"al-colour-{key}") if options else "nothing"
    colours = attribute_colours(data, idx, colour_name) if options else ["all items"] * len(idx)
    if not data:
        st.caption(f"No titles/attributes: {why}")
    cxy, ixy = project_pairs(content, ids, method=method, seed=0)
    fig = go.Figure()
    lx, ly = link_segments(cxy, ixy)
    fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line=dict(color="rgba(120,120,120,0.25)", width=1),
                             hoverinfo="skip", name="content–ID link"))
    frame = pd.DataFrame({"title": titles, "colour": colours})
    palette = px.colors.qualitative.Plotly
    for g, (value, part) in enumerate(frame.groupby("colour")):
        sel, colour = part.index.to_numpy(), palette[g % len(palette)]
        fig.add_trace(go.Scatter(x=cxy[sel, 0], y=cxy[sel, 1], mode="markers", name=str(value),
                                 legendgroup=str(value), marker=dict(symbol="circle", size=7, color=colour),
                                 text=part["title"], hovertemplate="%{text}<br>content<extra></extra>"))
        fig.add_trace(go.Scatter(x=ixy[sel, 0], y=ixy[sel, 1], mode="markers", name=f"{value} · ID",
                                 legendgroup=str(value), marker=dict(symbol="x", size=7, color=colour), showlegend=False,
                                 text=part["title"], hovertemplate="%{text}<br>ID<extra></extra>"))
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10), legend=dict(title=colour_name),
                      title=f"{method.upper()}: ● content, ✕ ID, grey line = same item")
    widgets.plot(fig, key=f"al-proj-{key}")
    try:
        matched, random = pair_cosines(content, ids, seed=0)
    except ValueError as exc:
        st.info(f"No cosine histogram: {exc}")
    else:
        hist = go.Figure([go.Histogram(x=matched, name="matched pairs", opacity=0.6, nbinsx=40, marker_color="#d62728"),
                          go.Histogram(x=random, name="random pairs", opacity=0.6, nbinsx=40, marker_color="#7f7f7f")])
        st.caption(f"cosine(content, ID): matched pairs mean {matched.mean():.3f} vs random pairs {random.mean():.3f}")
        hist.update_layout(barmode="overlay", height=260, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="cosine")
        widgets.plot(hist, key=f"al-hist-{key}")
    series = [(k, store.metric_history(uri, row["run_id"], k)) for k in ("align/alignment", "align/uniformity")]
    if all(df.empty for _, df in series):
        st.info("No align/alignment or align/uniformity metrics logged for this run.")
    else:
        widgets.plot(widgets.curves(series, title="Alignment and uniformity over epochs", x="step", height=260),
                     key=f"al-curve-{key}")


cols = st.columns(2)
for k, col in enumerate(cols):
    with col:
        row = widgets.run_picker(found, label=f"Run {'AB'[k]}", key=f"al-run-{k}", index=k)
        show_run(row, key=str(k))
