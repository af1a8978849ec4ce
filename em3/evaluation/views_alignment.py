"""Content-vs-ID embedding views: joint 2-D projections of item pairs and cosine similarity of pairs."""
from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _common_dim(content: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bring both tables to one width: PCA each to the smaller width when D != id_dim."""
    d = min(content.shape[1], ids.shape[1])
    if content.shape[1] == ids.shape[1]:
        return content, ids
    reduce = lambda x: PCA(n_components=min(d, len(x)), random_state=0).fit_transform(x)  # noqa: E731
    return reduce(content), reduce(ids)


def project_pairs(content: np.ndarray, ids: np.ndarray, *, method: str = "pca",
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D points of each item's content and ID embedding in ONE shared projection.

    content (N, D), ids (N, E) → (N, 2), (N, 2). Rows are L2-normalised first (CIC compares
    directions); if D != E each table is first PCA-reduced to min(D, E) columns.
    """
    if content.shape[0] != ids.shape[0]:
        raise ValueError(f"content has {content.shape[0]} rows but ids has {ids.shape[0]}")
    if method not in ("pca", "tsne"):
        raise ValueError(f"method: expected pca or tsne, got {method!r}")
    c, e = _common_dim(_unit(np.asarray(content, np.float64)), _unit(np.asarray(ids, np.float64)))
    both = np.concatenate([c, e])                        # (2N, d)
    n = len(c)
    if len(both) < 3:
        return np.zeros((n, 2)), np.zeros((n, 2))
    if method == "pca":
        xy = PCA(n_components=2, random_state=seed).fit_transform(both)
    else:
        perplexity = float(min(30.0, max(2.0, (len(both) - 1) / 3)))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(both)
    return xy[:n], xy[n:]


def link_segments(content_xy: np.ndarray, id_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y arrays of line segments content→ID separated by NaN (one plotly trace for all links)."""
    n = len(content_xy)
    xs, ys = np.full(3 * n, np.nan), np.full(3 * n, np.nan)
    xs[0::3], xs[1::3] = content_xy[:, 0], id_xy[:, 0]
    ys[0::3], ys[1::3] = content_xy[:, 1], id_xy[:, 1]
    return xs, ys


def pair_cosines(content: np.ndarray, ids: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of matched pairs (item i's content vs its own ID) and of random pairs (i vs π(i) ≠ i).

    Needs equal widths (the run logs the CIC-projected embeddings); raises ValueError otherwise.
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
