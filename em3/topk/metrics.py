"""Full-ranking top-K metrics as MMRec computes them: Recall, NDCG and Precision@K over all items.

For each evaluated user every item is scored, the user's excluded items (training positives)
are removed from the ranking, and the top K are compared with the user's held-out positives:
Recall@K = hits / |positives|, Precision@K = hits / K, NDCG@K = DCG / IDCG with
IDCG over min(|positives|, K) hits. Users without held-out positives are not evaluated.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

METRICS = ("recall", "ndcg", "precision")


def metric_names(ks: tuple[int, ...]) -> list[str]:
    return [f"{m}@{k}" for m in METRICS for k in ks]


def exclude_items(scores: Tensor, rows: sp.csr_matrix) -> Tensor:
    """Set scores[b, i] = -inf wherever rows[b, i] != 0 (in place; returns scores). scores (B, I)."""
    coo = rows.tocoo()
    if coo.nnz:
        scores[torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))] = float("-inf")
    return scores


def hit_matrix(scores: Tensor, truth: sp.csr_matrix, *, k: int) -> np.ndarray:
    """(B, k) bool: is the item at rank r of each row (after exclusion) a held-out positive?

    Excluded items carry -inf; a row with fewer than k finite scores counts its -inf tail as misses.
    """
    k = min(k, scores.shape[1])
    vals, top = scores.topk(k, dim=1)                                    # (B, k)
    rows = np.repeat(np.arange(top.shape[0]), k)
    hits = np.asarray(truth[rows, top.numpy().ravel()]).reshape(top.shape) != 0
    return hits & np.isfinite(vals.numpy())


def metrics_from_hits(hits: np.ndarray, num_pos: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per-user metrics from (B, Kmax) hit rows and (B,) positive counts (> 0) -> {name: (B,)}."""
    kmax = hits.shape[1]
    cum = np.cumsum(hits, axis=1)                                        # (B, Kmax)
    disc = 1.0 / np.log2(np.arange(2, kmax + 2))                         # (Kmax,)
    dcg = np.cumsum(hits * disc, axis=1)                                 # (B, Kmax)
    idcg_cum = np.cumsum(disc)                                           # (Kmax,)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        kk = min(k, kmax)
        ideal = idcg_cum[np.minimum(num_pos, kk) - 1]                    # (B,)
        out[f"recall@{k}"] = cum[:, kk - 1] / num_pos
        out[f"ndcg@{k}"] = dcg[:, kk - 1] / ideal
        out[f"precision@{k}"] = cum[:, kk - 1] / k
    return out


def full_ranking(score_fn, *, truth: sp.csr_matrix, exclude: sp.csr_matrix, ks: tuple[int, ...],
                 batch_size: int = 4096) -> dict[str, float]:
    """Mean Recall/NDCG/Precision@K over users with held-out positives.

    score_fn(users (B,) int64 Tensor) -> (B, I) float scores of every item; truth and exclude
    are (U, I) CSR matrices (held-out positives, items removed from the ranking).
    """
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    sums = {n: 0.0 for n in metric_names(ks)}
    for s in range(0, len(users), batch_size):
        u = users[s:s + batch_size]
        scores = score_fn(torch.from_numpy(u.astype(np.int64))).detach().float().cpu().clone()   # (B, I)
        exclude_items(scores, exclude[u])
        t = truth[u]
        per_user = metrics_from_hits(hit_matrix(scores, t, k=max(ks)), np.diff(t.indptr), ks)
        for n, v in per_user.items():
            sums[n] += float(v.sum())
    return {n: v / max(len(users), 1) for n, v in sums.items()}
