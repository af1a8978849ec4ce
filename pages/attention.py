"""Attention: the Fusion-Q-Former's query attention on an item's image and text, and DIN's history weights."""
from __future__ import annotations

import numpy as np
import streamlit as st

from app import store, widgets
from app.run_data import run_data
from em3.evaluation.views_attention import (item_text_tokens, overlay, ranker_weights, shaded_tokens_html,
                                            split_attention)

st.title(":material/visibility: Attention")
run = widgets.pick_explained_run("explain/fusion_attention.npz", key="att-run")
uri, rid = store.uri(), run["run_id"]
att = store.artifact_npz(uri, rid, "explain/fusion_attention.npz")
if att is None or not {"items", "attention", "image_grid", "Ti"} <= set(att):
    st.info("explain/fusion_attention.npz is unreadable or lacks items/attention/image_grid/Ti.")
    st.stop()
tokens = store.artifact_json(uri, rid, "explain/text_tokens.json") or {}
data, why = run_data(rid)
if data is None:
    st.info(f"Posters and titles unavailable: {why}. Showing the attention weights alone.")

items = [int(i) for i in att["items"]]
attention = att["attention"]                     # (n, layers, heads, Nq, Ti+Tt)
n, layers, heads, nq, total = attention.shape
ti, grid = int(att["Ti"]), tuple(int(g) for g in att["image_grid"])
name = (lambda i: f"{i}: {data.title(i)}") if data else (lambda i: f"item {i}")

st.subheader("Fusion-Q-Former: query → tokens")
c = st.columns(4)
row = c[0].selectbox("Item", range(n), format_func=lambda r: name(items[r]), key="att-item")
layer = c[1].selectbox("Layer", range(layers), key="att-layer")
head = c[2].selectbox("Head", ["mean", *range(heads)], key="att-head")
query = c[3].selectbox("Query", range(nq), key="att-query")
try:
    heat, text_w = split_attention(attention, row=row, layer=layer, head=None if head == "mean" else head,
                                   query=query, ti=ti, image_grid=grid)
except ValueError as exc:
    st.info(f"Cannot map attention onto the image grid: {exc}")
    st.stop()
left, right = st.columns([1, 2])
with left:
    image = data.image(items[row]) if data else None
    if image is not None and ti > 0:
        st.image(overlay(image, heat), caption=f"image attention on the {grid[0]}×{grid[1]} token grid")
    elif ti > 0:
        st.caption("No image for this item (masked): the grid alone.")
    if ti > 0:
        import plotly.express as px
        fig = px.imshow(heat, color_continuous_scale="Reds", aspect="equal")   # raw weights, own colour range
        fig.update_layout(height=260, margin=dict(l=0, r=0, t=20, b=0))
        widgets.plot(fig, key="att-grid")
with right:
    toks = item_text_tokens(tokens, items[row])           # by item index only: never another item's words
    share = float(heat.sum()) / max(float(heat.sum() + text_w.sum()), 1e-12)
    st.caption(f"Share of this query's attention on the image: {share:.0%}, on the text: {1 - share:.0%}")
    if toks:
        st.html(f'<div style="line-height: 2.0; font-size: 0.95rem">{shaded_tokens_html(toks, text_w)}</div>')
    elif toks is None:
        st.info(f"Text tokens unavailable: explain/text_tokens.json has no entry for item {items[row]}, so the "
                "text weights cannot be put on words.")
    else:
        st.info("This item has no text tokens (empty text).")

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
