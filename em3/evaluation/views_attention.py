"""Attention views: one query's weights over the image grid and the text tokens, overlays, DIN's labelled weights.

fusion_attention.npz holds attention (n, layers, heads, Nq, Ti+Tt): per item, the weights
each query puts on the Ti image tokens then the Tt text tokens. ranker_attention.npz holds
DIN's weights over the history: its ID attention and (content arms) its content attention.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from PIL import Image


def split_attention(attention: np.ndarray, *, row: int, layer: int, head: int | None, query: int,
                    ti: int, image_grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(H', W') image-token weights and (Tt,) text-token weights of one query; head None = mean over heads."""
    a = np.asarray(attention[row, layer], dtype=np.float64)       # (heads, Nq, Ti+Tt)
    w = a.mean(axis=0)[query] if head is None else a[head, query]  # (Ti+Tt,)
    h, wd = int(image_grid[0]), int(image_grid[1])
    if h * wd != ti:
        raise ValueError(f"image_grid {h}x{wd} does not match Ti={ti}")
    return w[:ti].reshape(h, wd), w[ti:]


def normalise(weights: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the max (all zeros stay zeros)."""
    w = np.nan_to_num(np.asarray(weights, np.float64), nan=0.0)
    top = w.max() if w.size else 0.0
    return w / top if top > 0 else np.zeros_like(w)


def overlay(image: Image.Image, heat: np.ndarray, *, alpha: float = 0.55, width: int = 320) -> Image.Image:
    """The image resized to `width` with the (H', W') heatmap upsampled on top in red (opacity ∝ weight)."""
    img = image.convert("RGB")
    height = max(1, round(img.height * width / max(img.width, 1)))
    img = img.resize((width, height))
    h8 = Image.fromarray((normalise(heat) * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    a = np.asarray(h8, np.float64)[..., None] / 255.0 * alpha        # (H, W, 1)
    red = np.zeros((height, width, 3))
    red[..., 0] = 255.0
    out = np.asarray(img, np.float64) * (1 - a) + red * a
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def shaded_tokens_html(tokens: list[str], weights: np.ndarray) -> str:
    """HTML of the tokens with a background whose opacity is the normalised attention weight."""
    import html
    w = normalise(np.asarray(weights)[: len(tokens)])
    spans = [f'<span title="{x:.3f}" style="background: rgba(230,60,30,{x:.2f}); padding: 1px 2px; '
             f'margin: 1px; border-radius: 3px; display: inline-block">{html.escape(t)}</span>'
             for t, x in zip(tokens, w)]
    return " ".join(spans)


def item_text_tokens(tokens: Mapping[str, list[str]], item: int) -> list[str] | None:
    """The exported text tokens of item index `item` (text_tokens.json is keyed by item index); None if absent."""
    found = tokens.get(str(int(item)))
    return list(found) if found is not None else None


def ranker_weights(ra: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(label, weights (n, L)) of each DIN attention in a ranker_attention.npz, labelled by what it is."""
    kind = str(ra["weights_kind"]) if "weights_kind" in ra else ""
    if kind == "id":
        out = [("ID attention", np.asarray(ra["weights"]))]
    elif kind == "mean":
        out = [("mean of ID and content attention", np.asarray(ra["weights"]))]
    else:
        out = [("attention (older export: for a content run, the mean of ID and content attention)",
                np.asarray(ra["weights"]))]
    if "content_weights" in ra:
        out.append(("content attention", np.asarray(ra["content_weights"])))
    return out
