"""Alignment: each item's content embedding next to its ID embedding, for two runs side by side."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from app import store, widgets
from app.run_data import attribute_colours, colour_columns, run_data
from em3.evaluation.views_alignment import (cold_rows, link_segments, match_rate, mean_pairwise_cosine,
                                            pair_cosines, project, sample_rows, shared_projection, shared_space)

st.title(":material/join_inner: Content vs ID alignment")
st.caption("CIC pulls each item's content embedding towards its own ID embedding in a shared space (its two "
           "projection heads, L2-normalised): there, linked pairs get shorter and matched cosines move right of "
           "the random ones. Runs without CIC heads have no such space and are shown side by side, unlinked.")
found = widgets.explained_runs_or_stop("explain/embeddings.npz")
c = st.columns([1, 1, 1])
method = c[0].radio("Projection", ["pca", "tsne"], horizontal=True, key="al-method",
                    format_func={"pca": "PCA", "tsne": "t-SNE"}.get)
max_items = c[1].number_input("Items shown (sampled)", value=300, min_value=10, max_value=2000, step=50, key="al-n")
uri = store.uri()


def _attribute_colours(data, idx: np.ndarray, *, key: str) -> tuple[list[str], str]:
    options = colour_columns(data) if data else []
    name = st.selectbox("Colour by", options, key=f"al-colour-{key}") if options else "nothing"
    return (attribute_colours(data, idx, name) if options else ["all items"] * len(idx)), name


def _scatter(fig: go.Figure, xy: np.ndarray, frame: pd.DataFrame, *, symbol: str, side: str, legend: bool) -> None:
    """One marker trace per colour group of `frame` (rows = rows of xy); a value keeps its colour across calls."""
    # 10 colours, or 24 where there are more groups (MovieLens's 19 genres): no two groups share a colour
    palette = px.colors.qualitative.Plotly if frame["colour_no"].max() < 10 else px.colors.qualitative.Dark24
    for value, part in frame.groupby("colour"):
        sel = part.index.to_numpy()
        colour = palette[int(part["colour_no"].iloc[0]) % len(palette)]
        fig.add_trace(go.Scatter(x=xy[sel, 0], y=xy[sel, 1], mode="markers", legendgroup=str(value),
                                 name=str(value) if legend else f"{value} · {side}", showlegend=legend,
                                 marker=dict(symbol=symbol, size=7, color=colour),
                                 text=part["title"], hovertemplate=f"%{{text}}<br>{side}<extra></extra>"))


def _no_shared_space(content: np.ndarray, ids: np.ndarray, cold: np.ndarray, frame: pd.DataFrame, *, key: str) -> None:
    st.warning(f"No shared content–ID space: this run has no CIC projection heads (λ = 0 or an arm without CIC). "
               f"Its content vectors (D = {content.shape[1]}) and ID vectors (id_dim = {ids.shape[1]}) live on "
               "unrelated axes, so no same-item links and no matched-vs-random cosines are drawn. "
               "Each side is projected on its own below.")
    for side, table, rows in (("content", content, np.arange(len(content))), ("ID", ids, np.flatnonzero(~cold))):
        fig = go.Figure()
        part = frame.iloc[rows].reset_index(drop=True)
        _scatter(fig, project(table[rows], method=method, seed=0), part, symbol="circle" if side == "content" else "x",
                 side=side, legend=True)
        extra = (f" ({int(cold.sum())} cold items left out: they share one unknown ID)"
                 if side == "ID" and cold.any() else "")
        fig.update_layout(height=340, margin=dict(l=10, r=10, t=30, b=10),
                          title=f"{method.upper()} of the {side} embeddings alone{extra}")
        widgets.plot(fig, key=f"al-own-{side}-{key}")


def _shared_space(content: np.ndarray, ids: np.ndarray, cold: np.ndarray, frame: pd.DataFrame, *, key: str) -> None:
    warm = np.flatnonzero(~cold)
    unknown = ids[cold][:1]                                       # every cold item's ID is this one vector
    cxy, ixy, uxy = shared_projection(content, ids[warm], unknown, method=method, seed=0)   # one fit on the union
    fig = go.Figure()
    lx, ly = link_segments(cxy[warm], ixy)
    fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line=dict(color="rgba(120,120,120,0.25)", width=1),
                             hoverinfo="skip", name="content–ID link (warm items)"))
    _scatter(fig, cxy, frame, symbol="circle", side="content", legend=True)
    _scatter(fig, ixy, frame.iloc[warm].reset_index(drop=True), symbol="x", side="ID", legend=False)
    if len(uxy):
        fig.add_trace(go.Scatter(x=cxy[cold, 0], y=cxy[cold, 1], mode="markers", name="cold item (content)",
                                 marker=dict(symbol="circle-open", size=11, color="black"), hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=uxy[:, 0], y=uxy[:, 1], mode="markers", name=f"unknown ID ({int(cold.sum())} cold)",
                                 marker=dict(symbol="star", size=14, color="black")))
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=30, b=10), legend=dict(title="colour"),
                      title=f"{method.upper()} of CIC's shared space: ● content, ✕ ID, grey line = same item")
    widgets.plot(fig, key=f"al-proj-{key}")
    if len(warm) < 2:
        st.info("Fewer than two warm items among those shown: no cosine statistics.")
        return
    matched, random = pair_cosines(content[warm], ids[warm], seed=0)
    rate = match_rate(content[warm], ids[warm])
    left_out = f"; {int(cold.sum())} cold items left out (their ID is the shared unknown one)" if cold.any() else ""
    st.caption(f"cosine(content, ID) over {len(warm)} warm items: matched pairs mean {matched.mean():.3f} vs random "
               f"pairs {random.mean():.3f} (gap {matched.mean() - random.mean():+.3f}); own ID nearest for "
               f"{rate:.0%} of items (chance {1 / len(warm):.1%}){left_out}.")
    spread = mean_pairwise_cosine(ids[warm])
    if matched.mean() - random.mean() < 0.02 and rate < 2 / len(warm):
        st.info("Matched pairs are no closer than random ones: this run has not aligned content and ID "
                "(too few epochs, or a small CIC weight λ).")
    if spread > 0.95:
        st.warning(f"The ID side has collapsed: its vectors nearly coincide in the shared space (mean pairwise "
                   f"cosine {spread:.3f}), so any content vector is about as close to every ID. CIC has not "
                   "separated the IDs here (a small λ, or too few epochs).")
    hist = go.Figure([go.Histogram(x=matched, name="matched pairs", opacity=0.6, nbinsx=40, marker_color="#d62728"),
                      go.Histogram(x=random, name="random pairs", opacity=0.6, nbinsx=40, marker_color="#7f7f7f")])
    hist.update_layout(barmode="overlay", height=260, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="cosine")
    widgets.plot(hist, key=f"al-hist-{key}")


def show_run(row: pd.Series, *, key: str) -> None:
    widgets.run_status_note(row)
    emb = store.artifact_npz(uri, row["run_id"], "explain/embeddings.npz")
    if emb is None or not {"item_index", "content", "id"} <= set(emb):
        st.info("explain/embeddings.npz is unreadable or lacks item_index/content/id.")
        return
    idx, content, ids = emb["item_index"], emb["content"], emb["id"]
    if content.ndim != 2 or content.shape[1] == 0:
        st.info("This run has no content embeddings (an id_only arm): nothing to align.")
        return
    space = shared_space(emb)
    if space is not None:
        content, ids = space
    cold = cold_rows(emb)
    keep = sample_rows(idx, cold, size=int(max_items), seed=0)      # warm and cold in the catalogue's shares
    idx, content, ids, cold = idx[keep], content[keep], ids[keep], cold[keep]
    data, why = run_data(row["run_id"])
    if not data:
        st.caption(f"No titles/attributes: {why}")
    colours, _ = _attribute_colours(data, idx, key=key)
    titles = [data.title(i) for i in idx] if data else [f"item {int(i)}" for i in idx]
    frame = pd.DataFrame({"title": titles, "colour": colours})
    frame["colour_no"] = frame["colour"].map({v: n for n, v in enumerate(sorted(set(colours)))})
    if "id_row" not in emb and cold.any():
        st.caption(f"{int(cold.sum())} items share one ID vector: treated as cold (this older export has no id_row).")
    if space is None:
        _no_shared_space(content, ids, cold, frame, key=key)
    else:
        _shared_space(content, ids, cold, frame, key=key)
    series = [(k, store.metric_history(uri, row["run_id"], k)) for k in ("align/alignment", "align/uniformity")]
    if all(df.empty for _, df in series):
        st.info("No align/alignment or align/uniformity metrics logged for this run.")
    else:
        widgets.plot(widgets.curves(series, title="Alignment and uniformity over epochs", x="step",
                                    x_title="epoch", height=260),
                     key=f"al-curve-{key}")


cols = st.columns(2)
for k, col in enumerate(cols):
    with col:
        row = widgets.run_picker(found, label=f"Run {'AB'[k]}", key=f"al-run-{k}", index=k)
        show_run(row, key=str(k))
