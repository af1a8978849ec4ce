"""Pure ranking/CTR metrics on numpy arrays: AUC, gAUC, logloss, Recall@K, NDCG@K.

Shape letters: N samples, U users, K cut-off.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC via the rank-sum (Mann-Whitney) formula; ties get the average rank.

    NaN when only one class is present (AUC is undefined there).
    """
    y = np.asarray(labels, dtype=np.float64).ravel()     # (N,)
    s = np.asarray(scores, dtype=np.float64).ravel()     # (N,)
    if y.shape != s.shape:
        raise ValueError(f"auc: labels {y.shape} and scores {s.shape} differ in shape")
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)                                  # average ranks for ties, 1-based
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Group AUC (DIN paper): mean of per-user AUC weighted by the user's sample count.

    Users whose samples are all one class are skipped; NaN if no user has both labels.
    """
    u = np.asarray(users).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(u, kind="stable")
    u, y, s = u[order], y[order], s[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends = np.r_[starts[1:], len(u)]
    total, weight = 0.0, 0
    for a, b in zip(starts, ends):
        value = auc(y[a:b], s[a:b])
        if value == value:                               # skip single-class users (NaN)
            total += value * (b - a)
            weight += b - a
    return float(total / weight) if weight else float("nan")


def logloss(labels: np.ndarray, probs: np.ndarray, *, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities clipped to [eps, 1 - eps]."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    if len(y) == 0:
        return float("nan")
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def recall_at_k(ranked: list[list[int]] | np.ndarray, relevant: list[set[int]], k: int) -> float:
    """Mean over users of |top-k ∩ relevant| / |relevant|; users without relevant items are skipped."""
    values = [len(set(list(r)[:k]) & rel) / len(rel) for r, rel in zip(ranked, relevant) if rel]
    return float(np.mean(values)) if values else float("nan")


def ndcg_at_k(ranked: list[list[int]] | np.ndarray, relevant: list[set[int]], k: int) -> float:
    """Mean over users of binary-relevance NDCG@k (gain 1/log2(rank+1)); users without relevant items skipped."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))       # (K,)
    values = []
    for r, rel in zip(ranked, relevant):
        if not rel:
            continue
        gains = np.array([1.0 if i in rel else 0.0 for i in list(r)[:k]])
        dcg = float((gains * discounts[: len(gains)]).sum())
        idcg = float(discounts[: min(len(rel), k)].sum())
        values.append(dcg / idcg)
    return float(np.mean(values)) if values else float("nan")


def ctr_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """{'auc', 'gauc', 'logloss'} of one split's predictions."""
    return {"auc": auc(labels, probs), "gauc": gauc(users, labels, probs), "logloss": logloss(labels, probs)}


def evenness(weights: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Attention rows (..., T) -> (...,) entropy of each row's weights on its real tokens (renormalised) over
    the entropy of an even spread on all of them: 1.0 for uniform attention (no preference), towards 0 as a row
    concentrates on one token; NaN for a row with fewer than two real tokens. `mask` (broadcastable to weights,
    True = a real token) says which tokens are real; without it, those with weight above 0 (masked tokens get
    exactly 0, but so does a real token whose weight underflowed, which makes the figure read too even)."""
    w = np.asarray(weights, dtype=np.float64)
    live = np.broadcast_to(np.asarray(mask, dtype=bool), w.shape) if mask is not None else w > 0
    w = np.where(live, np.maximum(w, 0.0), 0.0)
    p = w / np.maximum(w.sum(axis=-1, keepdims=True), 1e-300)
    entropy = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=-1)
    n = live.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n >= 2, entropy / np.log(np.maximum(n, 2)), np.nan)
