"""Content-vs-ID embedding views: CIC's shared space, cold items, joint 2-D projections and pair statistics.

Content and ID vectors are comparable only in the shared space of CIC's projection heads
(`content_aligned` / `id_aligned` in explain/embeddings.npz, L2-normalised). A run without CIC
heads has no such space: its raw content (D) and ID (id_dim) vectors live on unrelated axes, so
links and cosines between them mean nothing and these functions refuse them.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

UNKNOWN_ID_ROW = 1   # em3.data.schema.UNKNOWN_ID: the one ID row every cold item shares


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def shared_space(emb: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """(content, id) rows in CIC's shared space, or None when the run logged none (no CIC heads)."""
    if not {"content_aligned", "id_aligned"} <= set(emb):
        return None
    content, ids = np.asarray(emb["content_aligned"]), np.asarray(emb["id_aligned"])
    if content.ndim != 2 or content.shape != ids.shape or content.shape[1] == 0:
        return None
    return content, ids


def cold_rows(emb: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N,) True for items without an ID of their own (they all share the unknown ID row).

    From `id_row` (the item's ID-table row) when the export has it; older exports: rows whose ID
    vector another row repeats exactly (only the shared unknown row is repeated).
    """
    if "id_row" in emb:
        return np.asarray(emb["id_row"]) == UNKNOWN_ID_ROW
    ids = np.asarray(emb["id"])
    if len(ids) == 0:
        return np.zeros(0, dtype=bool)
    _, inverse, counts = np.unique(ids, axis=0, return_inverse=True, return_counts=True)
    return counts[inverse.ravel()] > 1


def sample_rows(item_index: np.ndarray, cold: np.ndarray, *, size: int, seed: int = 0) -> np.ndarray:
    """Sorted rows of `size` real items to show (row 0 is padding), warm and cold in the catalogue's proportions.

    Stratified on purpose: the split draws its cold items as `default_rng(seed).choice` over the item
    indices (em3.data.samples.draw_cold_items), so one plain draw with seed 0 here returned the very
    same items, all cold, and left no warm item to link or compare.
    """
    real = np.flatnonzero(np.asarray(item_index) > 0)
    if size >= len(real):
        return real
    cold = np.asarray(cold, bool)
    warm_rows, cold_rows_ = real[~cold[real]], real[cold[real]]
    n_cold = min(int(round(size * len(cold_rows_) / len(real))), len(cold_rows_))
    n_warm = min(size - n_cold, len(warm_rows))
    rng = np.random.default_rng([seed, 0xA119])                    # a stream of its own, not the split's
    picked = np.r_[rng.choice(warm_rows, size=n_warm, replace=False), rng.choice(cold_rows_, size=n_cold, replace=False)]
    return np.sort(picked).astype(np.int64)


def _project(both: np.ndarray, *, method: str, seed: int) -> np.ndarray:
    if method not in ("pca", "tsne"):
        raise ValueError(f"method: expected pca or tsne, got {method!r}")
    if len(both) < 3:
        return np.zeros((len(both), 2))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(both)
    perplexity = float(min(30.0, max(2.0, (len(both) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(both)


def shared_projection(*tables: np.ndarray, method: str = "pca", seed: int = 0) -> list[np.ndarray]:
    """2-D points of several tables of ONE space from one projection fitted on their union.

    Each table (Ni, D) → (Ni, 2); rows are L2-normalised first (CIC compares directions). Tables of
    different widths are not in one space: ValueError.
    """
    widths = {t.shape[1] for t in tables}
    if len(widths) != 1:
        raise ValueError(f"tables of widths {sorted(widths)} are not in one space: project each on its own")
    both = np.concatenate([_unit(np.asarray(t, np.float64)) for t in tables])
    xy = _project(both, method=method, seed=seed)
    cuts = np.cumsum([len(t) for t in tables])[:-1]
    return np.split(xy, cuts)


def project_pairs(content: np.ndarray, ids: np.ndarray, *, method: str = "pca",
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each item's content and ID point, (N, 2) and (N, 2), from one projection of both (`shared_projection`)."""
    if content.shape[0] != ids.shape[0]:
        raise ValueError(f"content has {content.shape[0]} rows but ids has {ids.shape[0]}")
    cxy, ixy = shared_projection(content, ids, method=method, seed=seed)
    return cxy, ixy


def project(x: np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, 2) points of one table on its own (rows L2-normalised)."""
    return _project(_unit(np.asarray(x, np.float64)), method=method, seed=seed)


def link_segments(content_xy: np.ndarray, id_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y arrays of line segments content→ID separated by NaN (one plotly trace for all links)."""
    n = len(content_xy)
    xs, ys = np.full(3 * n, np.nan), np.full(3 * n, np.nan)
    xs[0::3], xs[1::3] = content_xy[:, 0], id_xy[:, 0]
    ys[0::3], ys[1::3] = content_xy[:, 1], id_xy[:, 1]
    return xs, ys


def pair_cosines(content: np.ndarray, ids: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of matched pairs (item i's content vs its own ID) and of random pairs (i vs π(i) ≠ i).

    Pass shared-space rows of warm items only (a cold item's ID is the shared unknown one). Needs
    equal widths; raises ValueError otherwise.
    """
    if content.shape != ids.shape:
        raise ValueError(f"content {content.shape} and ids {ids.shape} differ: cosines need the same width")
    c, e = _unit(np.asarray(content, np.float64)), _unit(np.asarray(ids, np.float64))
    matched = (c * e).sum(axis=1)
    n = len(c)
    if n < 2:
        return matched, np.array([])
    perm = (np.arange(n) + np.random.default_rng(seed).integers(1, n, size=n)) % n   # never i itself
    return matched, (c * e[perm]).sum(axis=1)


def match_rate(content: np.ndarray, ids: np.ndarray) -> float:
    """Share of items whose own ID is the most cosine-similar of all the rows' IDs (chance: 1/N); NaN if empty."""
    if len(content) == 0:
        return float("nan")
    sim = _unit(np.asarray(content, np.float64)) @ _unit(np.asarray(ids, np.float64)).T   # (N, N)
    return float((sim.argmax(axis=1) == np.arange(len(content))).mean())


def mean_pairwise_cosine(x: np.ndarray) -> float:
    """Mean cosine between distinct rows: near 1 when they all point one way (a collapsed side); NaN below 2 rows."""
    n = len(x)
    if n < 2:
        return float("nan")
    u = _unit(np.asarray(x, np.float64))
    total = float(np.square(u.sum(axis=0)).sum())              # Σ_ij cos(i, j), diagonal included
    return (total - float((u * u).sum())) / (n * (n - 1))
