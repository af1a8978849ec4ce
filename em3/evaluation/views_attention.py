"""Attention views: one query's weights over each fused modality's tokens, overlays, DIN's labelled weights.

fusion_attention.npz holds attention (n, layers, heads, Nq, T): per item, the weights each query puts
on the fused tokens, laid out as the `modalities` / `sizes` segments say (older exports: the Ti image
tokens then the text tokens). token_labels.json names each item's tokens per modality. How a
modality is drawn (a grid over the image, shaded words, a bar per token) is its registry `view`.
ranker_attention.npz holds DIN's weights over the history: its ID attention and (content arms) its
content attention.
"""
from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np
from PIL import Image



def segments_of(att: Mapping[str, np.ndarray]) -> list[tuple[str, int]]:
    """(modality, T_m) of the attention columns, in order; an older export without `modalities` is image
    (Ti columns) then text (the rest)."""
    if "modalities" in att and "sizes" in att:
        return [(str(m), int(t)) for m, t in zip(att["modalities"], att["sizes"])]
    ti, total = int(att["Ti"]), int(att["attention"].shape[-1])
    return [(m, t) for m, t in (("image", ti), ("text", total - ti)) if t > 0]


def query_weights(attention: np.ndarray, *, row: int, layer: int, head: int | None, query: int) -> np.ndarray:
    """(T,) weights of one query over every fused token; head None = mean over heads."""
    a = np.asarray(attention[row, layer], dtype=np.float64)       # (heads, Nq, T)
    return a.mean(axis=0)[query] if head is None else a[head, query]


def split_segments(weights: np.ndarray, segments: list[tuple[str, int]]) -> dict[str, np.ndarray]:
    """{modality: its (T_m,) slice of `weights`}; ValueError when the sizes do not add up to the columns."""
    if sum(t for _, t in segments) != len(weights):
        raise ValueError(f"segments {segments} cover {sum(t for _, t in segments)} columns, the attention has "
                         f"{len(weights)}")
    out, start = {}, 0
    for m, t in segments:
        out[m] = np.asarray(weights[start:start + t])
        start += t
    return out


def token_mask_of(att: Mapping[str, np.ndarray], labels: Mapping[str, Mapping[str, list]] | None = None
                  ) -> np.ndarray:
    """(n, T) True where an exported item's token is real: the export's token_mask. An older export lacks it,
    and its float16 weights read 0 on real tokens a peaked query ignores, so per modality segment: the item's
    first len(labels) tokens where the token labels list it (text: its word pieces), else all of the segment's
    tokens where any layer, head or query weighs one of them (an image is there or missing as a whole)."""
    if "token_mask" in att:
        return np.asarray(att["token_mask"], dtype=bool)
    a = np.asarray(att["attention"])
    items = [str(int(i)) for i in att["items"]]
    mask = np.zeros((a.shape[0], a.shape[-1]), dtype=bool)
    start = 0
    for m, t in segments_of(att):
        weighed = (a[..., start:start + t] > 0).any(axis=(1, 2, 3, 4))                   # (n,)
        for row, item in enumerate(items):
            listed = (labels or {}).get(m, {}).get(item)
            if listed:
                mask[row, start:start + min(len(listed), t)] = True
            elif weighed[row]:
                mask[row, start:start + t] = True
        start += t
    return mask


def even_shares(parts: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> tuple[dict[str, int],
                                                                                             dict[str, float]]:
    """({modality: its real tokens}, {modality: the share an even spread over them would give}) of one query's
    split weights; `masks` are the item's split token_mask_of. A modality's raw share is read against this one,
    as it grows with its token count whatever the query prefers."""
    counts = {m: int(np.asarray(masks[m], dtype=bool).sum()) for m in parts}
    total = max(sum(counts.values()), 1)
    return counts, {m: c / total for m, c in counts.items()}


def modality_lift(attention: np.ndarray, segments: list[tuple[str, int]], *, layer: int,
                  mask: np.ndarray) -> np.ndarray:
    """(heads, Nq, modalities): each (head, query)'s share of its weight on a modality over the share an even
    spread on the item's real tokens (`mask` (n, T), token_mask_of) would give it, as a mean over the exported
    items. 1 = no preference, above 1 = the pair favours that modality. Items without a real token of a
    modality are left out of its mean."""
    a = np.asarray(attention[:, layer], dtype=np.float64)                 # (n, heads, Nq, T)
    bounds = np.cumsum([0, *[t for _, t in segments]])
    if bounds[-1] != a.shape[-1]:
        raise ValueError(f"segments {segments} cover {bounds[-1]} columns, the attention has {a.shape[-1]}")
    m = np.asarray(mask, dtype=bool)
    spans = list(zip(bounds[:-1], bounds[1:]))
    weight = np.stack([a[..., lo:hi].sum(-1) for lo, hi in spans], axis=-1)                   # (n, h, Nq, M)
    count = np.stack([m[:, lo:hi].sum(-1) for lo, hi in spans], axis=-1)[:, None, None, :]    # (n, 1, 1, M)
    share = weight / np.maximum(weight.sum(-1, keepdims=True), 1e-300)
    even = count / np.maximum(count.sum(-1, keepdims=True), 1)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)                   # a modality no item has: NaN
        lift = np.where(count > 0, share / even, np.nan)
        return np.nanmean(lift, axis=0) if len(lift) else np.full(a.shape[1:3] + (len(segments),), np.nan)


def view_of(modality: str) -> str:
    """How the page draws a modality's weights: its registry view; 'bars' for one this version lacks."""
    from em3 import modalities
    return modalities.get(modality).view if modality in modalities.NAMES else "bars"


def item_labels(labels: Mapping[str, Mapping[str, list[str]]], modality: str, item: int) -> list[str] | None:
    """The exported token labels of item index `item` for `modality` (token_labels.json); None if absent."""
    found = labels.get(modality, {}).get(str(int(item)))
    return list(found) if found is not None else None


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
