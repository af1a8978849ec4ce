"""Metrics against hand-computed values and scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, ndcg_score, roc_auc_score

from em3.evaluation.metrics import auc, ctr_metrics, gauc, logloss, ndcg_at_k, recall_at_k


def test_auc_hand_computed_with_ties():
    # pairs (pos, neg): (0.8 vs 0.4) win, (0.8 vs 0.6) win, (0.4 vs 0.4) tie, (0.4 vs 0.6) loss -> 2.5 / 4
    assert auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.4, 0.4, 0.6])) == pytest.approx(0.625)
    assert auc(np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3])) == 0.0
    assert math.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_auc_and_logloss_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500), 2)               # rounding creates many ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert logloss(y, p) == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), abs=1e-9)


def test_logloss_clips_certain_mistakes():
    assert logloss(np.array([1.0]), np.array([0.0])) == pytest.approx(-math.log(1e-7))
    assert logloss(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2))


def test_gauc_is_sample_weighted_and_skips_single_class_users():
    users = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 1])           # user 2 has only positives -> skipped
    scores = np.array([0.8, 0.4, 0.4, 0.6, 0.1, 0.9, 0.5, 0.5])
    # user 0: AUC 0.625 (4 samples), user 1: AUC 0 (2 samples) -> (0.625*4 + 0*2) / 6
    assert gauc(users, labels, scores) == pytest.approx(2.5 / 6)
    assert math.isnan(gauc(np.array([0, 0]), np.array([1, 1]), np.array([0.2, 0.3])))


def test_recall_and_ndcg_hand_computed():
    ranked = [[3, 1, 2], [5, 4, 6]]
    relevant = [{1, 2}, {7}]
    assert recall_at_k(ranked, relevant, 2) == pytest.approx((1 / 2 + 0) / 2)
    # user 0: hit at rank 2 -> dcg 1/log2(3); idcg = 1 + 1/log2(3)
    expect = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(ranked, relevant, 2) == pytest.approx(expect / 2)
    assert recall_at_k([[1]], [set()], 1) != recall_at_k([[1]], [set()], 1)   # NaN: no user with relevant items


def test_ndcg_matches_sklearn():
    rng = np.random.default_rng(1)
    scores = rng.random((20, 30))
    truth = (rng.random((20, 30)) < 0.15).astype(int)
    truth[:, 0] = 1                                   # every user has a relevant item
    ranked = [list(np.argsort(-s, kind="stable")) for s in scores]
    relevant = [set(np.flatnonzero(t)) for t in truth]
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(ndcg_score(truth, scores, k=10), abs=1e-9)


def test_ctr_metrics_keys():
    out = ctr_metrics(np.array([0, 0, 1, 1]), np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.8, 0.3]))
    # logloss by hand: -(ln 0.9 + ln(1 - 0.1) + ln 0.8 + ln(1 - 0.3)) / 4
    assert out == {"auc": 1.0, "gauc": 1.0,
                   "logloss": pytest.approx(-(2 * math.log(0.9) + math.log(0.8) + math.log(0.7)) / 4)}
