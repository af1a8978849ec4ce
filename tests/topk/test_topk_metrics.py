"""Full-ranking Recall/NDCG/Precision@K against hand-computed cases; excluded items never count."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from em3.topk.metrics import full_ranking, metrics_from_hits


def csr(rows: list[list[int]], num_items: int) -> sp.csr_matrix:
    u = [i for i, r in enumerate(rows) for _ in r]
    it = [j for r in rows for j in r]
    return sp.csr_matrix((np.ones(len(u), np.float32), (u, it)), shape=(len(rows), num_items))


def run(scores: list[list[float]], truth: list[list[int]], exclude: list[list[int]], ks=(1, 2, 3), batch_size=4096):
    s = torch.tensor(scores)
    n = s.shape[1]
    return full_ranking(lambda u: s[u], truth=csr(truth, n), exclude=csr(exclude, n), ks=ks, batch_size=batch_size)


def test_hand_computed_single_user():
    # items by score: 0 (train, excluded), 1 (positive), 2, 3 (positive), 4, 5 -> ranking after exclusion 1, 2, 3, 4, 5
    m = run([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]], truth=[[1, 3]], exclude=[[0]])
    idcg2 = 1 + 1 / math.log2(3)
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["precision@1"] == pytest.approx(1.0)
    assert m["ndcg@1"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["precision@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx(1.0 / idcg2)
    assert m["recall@3"] == pytest.approx(1.0)
    assert m["precision@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / idcg2)


def test_top_scored_training_item_is_never_counted():
    # Item 0 scores highest and is (wrongly) also listed as a held-out positive; it is a training
    # item, so it is excluded from the ranking and must not count as a hit.
    m = run([[5.0, 0.1, 0.2, 0.3]], truth=[[0, 1]], exclude=[[0]], ks=(1, 2))
    assert m["recall@1"] == 0.0 and m["precision@1"] == 0.0 and m["ndcg@1"] == 0.0
    # Ranking after exclusion: 3, 2, 1 -> item 1 only at rank 3, outside K=2.
    assert m["recall@2"] == 0.0
    # Without the exclusion, item 0 would have been a hit at rank 1.
    m_no_excl = run([[5.0, 0.1, 0.2, 0.3]], truth=[[0, 1]], exclude=[[]], ks=(1, 2))
    assert m_no_excl["recall@1"] == pytest.approx(0.5)


def test_all_excluded_tail_counts_as_miss():
    # Only one finite item remains; K=3 ranks two -inf items which must not be hits.
    m = run([[0.1, 0.9, 0.8]], truth=[[1, 2]], exclude=[[1, 2]], ks=(3,))
    assert m["recall@3"] == 0.0 and m["ndcg@3"] == 0.0


def test_ideal_dcg_caps_at_k_and_recall_uses_all_positives():
    # 3 positives, hits at ranks 1 and 2: NDCG@2 = 1 (ideal caps at K), Recall@2 = 2/3.
    m = run([[0.9, 0.8, 0.1, 0.7, 0.0]], truth=[[0, 1, 3]], exclude=[[]], ks=(2,))
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["precision@2"] == pytest.approx(1.0)


def test_mean_over_users_with_positives_only():
    scores = [[0.9, 0.1, 0.2], [0.1, 0.9, 0.2], [0.5, 0.4, 0.3]]
    # user 0 hits at rank 1, user 1 misses at K=1 (its positive is item 2), user 2 has no positives (skipped)
    m = run(scores, truth=[[0], [2], []], exclude=[[], [], []], ks=(1,))
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["ndcg@1"] == pytest.approx(0.5)


def test_batching_does_not_change_the_result():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 12)).tolist()
    truth = [sorted(rng.choice(12, 3, replace=False).tolist()) for _ in range(7)]
    exclude = [[j for j in range(12) if j not in t][:4] for t in truth]
    a = run(scores, truth, exclude, ks=(2, 5), batch_size=2)
    b = run(scores, truth, exclude, ks=(2, 5), batch_size=100)
    assert a == pytest.approx(b)


def test_metrics_from_hits_matches_definitions():
    hits = np.array([[0, 1, 1], [1, 0, 0]], bool)
    out = metrics_from_hits(hits, np.array([4, 1]), (3,))
    assert out["recall@3"] == pytest.approx([0.5, 1.0])
    assert out["precision@3"] == pytest.approx([2 / 3, 1 / 3])
    idcg3 = 1 + 1 / math.log2(3) + 0.5
    assert out["ndcg@3"] == pytest.approx([(1 / math.log2(3) + 0.5) / idcg3, 1.0])
