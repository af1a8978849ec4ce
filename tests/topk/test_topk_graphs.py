"""The user-item adjacency, FREEDOM's degree-sensitive pruning and the item-item kNN graph."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from em3.topk.graphs import bipartite_adjacency, edge_weights, item_item_graph, knn_graph, pruned_adjacency

# users 0, 1; items 0, 1, 2: u0-i0, u0-i1, u1-i1, u1-i2, u0-i2 -> deg u0 = 3, u1 = 2; i0 = 1, i1 = 2, i2 = 2
EDGES = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 2, 2]])


def test_bipartite_adjacency_is_symmetric_normalised():
    a = bipartite_adjacency(EDGES, num_users=2, num_items=3).to_dense()
    assert a.shape == (5, 5)
    assert torch.allclose(a, a.T)
    assert a[0, 2] == pytest.approx(1 / np.sqrt(3 * 1))     # u0 - i0 (node 2)
    assert a[1, 3] == pytest.approx(1 / np.sqrt(2 * 2))     # u1 - i1 (node 3)
    assert a[1, 2] == 0 and a[0, 0] == 0                    # no edge, no self-loop
    assert int((a > 0).sum()) == 2 * EDGES.shape[1]


def test_pruning_keeps_the_share_and_prefers_low_degree_edges():
    # one hub user with 40 items and 40 users with one private item each
    edges = torch.tensor(np.concatenate([np.stack([np.zeros(40), np.arange(40)]),
                                         np.stack([np.arange(1, 41), np.arange(40, 80)])], axis=1), dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    hub_kept = 0
    for _ in range(50):
        a = pruned_adjacency(edges, num_users=41, num_items=80, rate=0.8, generator=gen)
        assert a._nnz() == 2 * int(80 * (1 - 0.8))   # MMRec: int(E * (1 - rate)) = 15
        hub_kept += int((a.indices()[0] == 0).sum())
    # weight of a hub edge 1/sqrt(40), of a private edge 1 -> the hub keeps far fewer than its 50% share
    assert hub_kept / (50 * 15) < 0.25
    w = edge_weights(edges, num_users=41, num_items=80)
    assert w[0] == pytest.approx(1 / np.sqrt(40)) and w[-1] == pytest.approx(1.0)


def test_zero_rate_is_the_full_graph():
    full = bipartite_adjacency(EDGES, num_users=2, num_items=3).to_dense()
    assert torch.equal(pruned_adjacency(EDGES, num_users=2, num_items=3, rate=0.0).to_dense(), full)


def test_knn_graph_keeps_k_most_similar_including_self():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    g = knn_graph(x * torch.tensor([[3.0], [1.0], [5.0], [1.0], [2.0]]), k=2).to_dense()   # cosine: scale-free
    assert (g > 0).sum(1).tolist() == [2] * 5
    assert torch.allclose(g[g > 0], torch.full((10,), 0.5))    # D^-1/2 A D^-1/2 with row degree k
    assert g[0, 0] > 0 and g[0, 1] > 0 and g[2, 3] > 0 and g[2, 0] == 0


def test_item_item_graph_mixes_image_and_text():
    img = torch.eye(4)
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    g = item_item_graph(img, txt, k=2, image_weight=0.1).to_dense()
    expected = 0.1 * knn_graph(img, k=2).to_dense() + 0.9 * knn_graph(txt, k=2).to_dense()
    assert torch.allclose(g, expected)
    assert torch.allclose(item_item_graph(None, txt, k=2, image_weight=0.1).to_dense(), knn_graph(txt, k=2).to_dense())
