"""Sparse graphs of the graph recommenders: the normalised user-item adjacency, FREEDOM's
degree-sensitive edge pruning, and the frozen item-item kNN graph built from content features.

Nodes of the user-item graph: users 0..U-1, then items U..U+I-1.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor


def edges_of(train: sp.csr_matrix) -> Tensor:
    """(2, E) int64 (user, item) edges of the training matrix."""
    coo = train.tocoo()
    return torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))


def edge_weights(edges: Tensor, *, num_users: int, num_items: int) -> Tensor:
    """(E,) symmetric-normalised weights 1/sqrt(deg(u) deg(i)) of (user, item) edges."""
    du = torch.bincount(edges[0], minlength=num_users).float().clamp(min=1)
    di = torch.bincount(edges[1], minlength=num_items).float().clamp(min=1)
    return du[edges[0]].rsqrt() * di[edges[1]].rsqrt()


def bipartite_adjacency(edges: Tensor, *, num_users: int, num_items: int) -> Tensor:
    """Sparse (U+I, U+I) D^-1/2 A D^-1/2 of the user-item graph (LightGCN's propagation matrix)."""
    w = edge_weights(edges, num_users=num_users, num_items=num_items)    # (E,)
    rows = torch.cat([edges[0], edges[1] + num_users])
    cols = torch.cat([edges[1] + num_users, edges[0]])
    n = num_users + num_items
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.cat([w, w]), (n, n), check_invariants=False).coalesce()


def pruned_adjacency(edges: Tensor, *, num_users: int, num_items: int, rate: float,
                     generator: torch.Generator | None = None) -> Tensor:
    """FREEDOM's degree-sensitive edge pruning: keep (1 - rate) of the edges, drawn without
    replacement with probability proportional to 1/sqrt(deg(u) deg(i)) (edges between
    high-degree nodes go first), then re-normalise the kept graph."""
    if rate <= 0.0:
        return bipartite_adjacency(edges, num_users=num_users, num_items=num_items)
    w = edge_weights(edges, num_users=num_users, num_items=num_items)
    keep = max(1, int(edges.shape[1] * (1.0 - rate)))
    idx = torch.multinomial(w, keep, replacement=False, generator=generator)
    return bipartite_adjacency(edges[:, idx], num_users=num_users, num_items=num_items)


def knn_graph(features: Tensor, *, k: int) -> Tensor:
    """Sparse (I, I) kNN graph by cosine similarity (each item keeps its k most similar, itself
    included, as MMRec), weights D^-1/2 A D^-1/2 with D the row degree (= k)."""
    x = features / features.norm(dim=1, keepdim=True).clamp(min=1e-12)   # (I, C); all-zero rows stay zero
    n = x.shape[0]
    k = min(k, n)
    knn = torch.empty(n, k, dtype=torch.long)
    for s in range(0, n, 4096):                                           # bounded (4096, I) similarity blocks
        sim = x[s:s + 4096] @ x.T                                          # (b, I)
        knn[s:s + 4096] = sim.topk(k, dim=1).indices
    rows = torch.arange(n).unsqueeze(1).expand(-1, k).reshape(-1)
    cols = knn.reshape(-1)
    deg = torch.bincount(rows, minlength=n).float()
    values = deg[rows].rsqrt() * deg[cols].rsqrt()
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False).coalesce()


def item_item_graph(image: Tensor | None, text: Tensor | None, *, k: int, image_weight: float) -> Tensor:
    """FREEDOM's frozen item-item graph: image_weight * kNN(image) + (1 - image_weight) * kNN(text)."""
    if image is None and text is None:
        raise ValueError("item_item_graph needs image or text features")
    if image is None:
        return knn_graph(text, k=k)
    if text is None:
        return knn_graph(image, k=k)
    return (image_weight * knn_graph(image, k=k) + (1.0 - image_weight) * knn_graph(text, k=k)).coalesce()
