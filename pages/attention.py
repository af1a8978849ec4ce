"""Attention: the Fusion-Q-Former's query attention on each fused modality of an item, and DIN's history weights."""
from __future__ import annotations

import numpy as np
import streamlit as st

from app import store, widgets
from app.run_data import run_data
from em3.evaluation.metrics import evenness
from em3.training.run import EVENNESS_ITEMS
from em3.evaluation.views_attention import (even_shares, item_labels, modality_lift, overlay,
                                            query_weights, ranker_weights, segments_of, shaded_tokens_html,
                                            split_segments, token_mask_of, view_of)

st.title(":material/visibility: Attention")
run = widgets.pick_explained_run("explain/fusion_attention.npz", key="att-run")
uri, rid = store.uri(), run["run_id"]
att = store.artifact_npz(uri, rid, "explain/fusion_attention.npz")
if att is None or not {"items", "attention", "Ti"} <= set(att):
    st.info("explain/fusion_attention.npz is unreadable or lacks items/attention/Ti.")
    st.stop()
labels = store.artifact_json(uri, rid, "explain/token_labels.json")
if labels is None:   # an export from before the modality registry: text labels only
    labels = {"text": store.artifact_json(uri, rid, "explain/text_tokens.json") or {}}
data, why = run_data(rid)
if data is None:
    st.info(f"Posters and titles unavailable: {why}. Showing the attention weights alone.")

items = [int(i) for i in att["items"]]
attention = att["attention"]                     # (n, layers, heads, Nq, T)
n, layers, heads, nq, total = attention.shape
segments = segments_of(att)
name = (lambda i: f"{i}: {data.title(i)}") if data else (lambda i: f"item {i}")

st.subheader("Fusion-Q-Former: query → tokens")
st.caption("Fused modalities: " + ", ".join(f"**{m}** ({t} tokens)" for m, t in segments))
c = st.columns(4)
row = c[0].selectbox("Item", range(n), format_func=lambda r: name(items[r]), key="att-item")
layer = c[1].selectbox("Layer", range(layers), key="att-layer")
head = c[2].selectbox("Head", ["mean", *range(heads)], key="att-head")
query = c[3].selectbox("Query", range(nq), key="att-query")
try:
    parts = split_segments(query_weights(attention, row=row, layer=layer, head=None if head == "mean" else head,
                                         query=query), segments)
except ValueError as exc:
    st.info(f"Cannot split the attention columns by modality: {exc}")
    st.stop()
total_w = max(sum(float(w.sum()) for w in parts.values()), 1e-12)
token_mask = token_mask_of(att, labels)                               # (n, T) real tokens
masks = split_segments(token_mask[row], segments)
counts, even = even_shares(parts, masks)
st.caption("Share of this query's attention: " + ", ".join(f"{m} {float(w.sum()) / total_w:.0%}"
                                                           for m, w in parts.items())
           + ". Spread evenly over the item's " + " and ".join(f"{c} real {m}" for m, c in counts.items())
           + " tokens it would be " + ", ".join(f"{m} {even[m]:.0%}" for m in parts) + ". Evenness of this "
           f"query's weights (entropy over an even spread's; 1 = no preference): "
           f"{evenness(np.concatenate(list(parts.values())), token_mask[row]):.3f}.")


def draw_grid(modality: str, w: np.ndarray) -> None:
    grid = tuple(int(g) for g in att["image_grid"]) if "image_grid" in att else None
    if grid is None or grid[0] * grid[1] != len(w):
        st.info(f"Cannot map the {len(w)} {modality} weights onto an image grid ({grid}).")
        return
    heat = w.reshape(grid)
    image = data.image(items[row]) if data else None
    if image is not None:
        st.image(overlay(image, heat), caption=f"{modality} attention on the {grid[0]}×{grid[1]} token grid")
    else:
        st.caption(f"No {modality} for this item (masked), or the run's data is unavailable: the grid alone.")
    import plotly.express as px
    fig = px.imshow(heat, color_continuous_scale="Reds", aspect="equal")   # raw weights, own colour range
    fig.update_layout(height=260, margin=dict(l=0, r=0, t=20, b=0))
    widgets.plot(fig, key=f"att-grid-{modality}")


def draw_tokens(modality: str, w: np.ndarray) -> None:
    toks = item_labels(labels, modality, items[row])      # by item index only: never another item's tokens
    if toks:
        st.html(f'<div style="line-height: 2.0; font-size: 0.95rem">{shaded_tokens_html(toks, w)}</div>')
    elif toks is None:
        st.info(f"{modality.capitalize()} tokens unavailable: the run's token labels have no entry for item "
                f"{items[row]}, so the {modality} weights cannot be put on words.")
    else:
        st.info(f"This item has no {modality} tokens.")


def draw_bars(modality: str, w: np.ndarray) -> None:
    import plotly.graph_objects as go
    toks = item_labels(labels, modality, items[row])
    real = toks if toks and len(toks) <= len(w) else None
    x = real if real is not None else [f"token {k}" for k in range(len(w))]
    if not float(w.sum()) > 0:
        st.info(f"This item has no {modality} tokens (masked): no weight on them.")
        return
    fig = go.Figure(go.Bar(x=list(x), y=w[: len(x)], marker_color="#d9480f",
                           hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(height=260, margin=dict(l=0, r=0, t=20, b=0), yaxis_title="weight",
                      xaxis_title="token")
    widgets.plot(fig, key=f"att-bars-{modality}")


DRAW = {"grid": draw_grid, "tokens": draw_tokens, "bars": draw_bars}
cols = st.columns(min(len(parts), 3))
for k, (modality, w) in enumerate(parts.items()):
    with cols[k % len(cols)]:
        st.markdown(f"**{modality}** · {float(w.sum()) / total_w:.0%} of the weight")
        DRAW[view_of(modality)](modality, w)

with st.expander(f"Which modality each head and query favours, over the {n} exported items", expanded=False):
    lift = modality_lift(attention, segments, layer=layer, mask=token_mask)   # (heads, Nq, modalities)
    import plotly.graph_objects as go
    rows = [f"head {h} · query {q}" for h in range(heads) for q in range(nq)]
    z = lift.reshape(heads * nq, len(segments))
    top = float(np.nanmax(z)) if np.isfinite(z).any() else 2.0
    fig = go.Figure(go.Heatmap(z=z, x=[m for m, _ in segments], y=rows, zmin=0.0, zmid=1.0, zmax=max(2.0, top),
                               colorscale="RdBu_r",
                               text=np.round(z, 2), texttemplate="%{text}", colorbar=dict(title="× even"),
                               hovertemplate="%{y}, %{x}: %{z:.2f}× an even spread<extra></extra>"))
    fig.update_layout(height=60 + 28 * len(rows), margin=dict(l=0, r=0, t=10, b=0), yaxis_autorange="reversed")
    widgets.plot(fig, key="att-lift")
    st.caption(f"Layer {layer}. Each cell: the pair's share of weight on that modality over the share an even spread "
               "on the item's real tokens would give it, as a mean over the items. 1.0 (white) means no "
               "preference; red favours the modality, blue avoids it.")

trend = store.metric_history(uri, rid, "fusion/query_evenness")
if not trend.empty:
    with st.expander("Query evenness over epochs (fusion/query_evenness)", expanded=False):
        widgets.plot(widgets.curves([(run["name"], trend)], title="Evenness of the last layer's query attention",
                                    x="step", x_title="epoch", hlines=[(1.0, "uniform: the queries pool like a mean")],
                                    height=260), key="att-evenness")
        st.caption(f"Mean over {EVENNESS_ITEMS} catalogue items (a fixed seeded sample), every head and query, "
                   "after each epoch. "
                   "Compare the arm em3_mean_fusion on the Runs page: near 1.0 the queries add little over a mean.")

st.subheader("Ranker: attention over the user's history")
ra = store.artifact_npz(uri, rid, "explain/ranker_attention.npz")
if ra is None or not {"user", "target", "history", "weights"} <= set(ra):
    st.info("This run has no explain/ranker_attention.npz (DCNv2 runs and id_only runs may not log one).")
    st.stop()
pairs = list(range(len(ra["user"])))
pick = st.selectbox("User → target", pairs, key="att-user",
                    format_func=lambda p: f"user {data.samples.user_ids[int(ra['user'][p])] if data else int(ra['user'][p])}"
                                          f" → {name(int(ra['target'][p]))}")
labelled = ranker_weights(ra)                         # ID attention [+ content attention], each labelled
st.caption("DIN weighs each history item against the target twice: over the ID embeddings (**ID attention**) and "
           "over the content embeddings (**content attention**, content arms). Each row sums to 1 over the real items."
           if len(labelled) > 1 else f"Weights shown: **{labelled[0][0]}**.")
hist = ra["history"][pick]
real = [k for k, h in enumerate(hist) if int(h) != 0]
if not real:
    st.info("This user has an empty history at that sample.")
    st.stop()
row_evenness = {label.split(" (")[0]: float(evenness(w[pick][real], np.ones(len(real), bool)))
                for label, w in labelled}
st.caption(f"This history has {len(real)} real items: an even spread would give each 1/{len(real)} = "
           f"{1 / len(real):.3f}. The bars are scaled to the row's largest weight. Evenness (entropy over an even "
           "spread's; 1 = no preference): " + ", ".join(f"{k} {v:.3f}" for k, v in row_evenness.items()) + ".")
cols = st.columns(min(len(real), 8))
for j, k in enumerate(real):
    h = int(hist[k])
    with cols[j % len(cols)]:
        img = data.image(h) if data else None
        if img is not None:
            st.image(img, width=90)
        for label, weights in labelled:
            row_w = weights[pick]
            top = float(max(row_w[i] for i in real)) or 1.0
            st.progress(float(np.clip(row_w[k] / top, 0, 1)), text=f"{label.split(' (')[0]}: {row_w[k]:.3f}")
        st.caption(f"#{j + 1} {name(h)}")
