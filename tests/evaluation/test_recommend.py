"""Top-K ranking against hand-computed lists: histories as of the test period, exclusions, Recall/NDCG.

Two users, five events each (3 train, 1 val, 1 test), ten items; the fake model scores every item
by a fixed table, so the expected top-3 of each user follows by hand from its exclusions.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from em3.config import DataConfig
from em3.data.samples import build_samples
from em3.data.schema import RawDataset
from em3.evaluation.recommend import evaluate_topk, held_out_input, latest_history, positives, recommend
from em3.evaluation import views_user   # its test_* names would be collected if imported bare

CPU = torch.device("cpu")
# item index -> score; items 101..110 are indices 1..10
SCORES = {5: 9.0, 4: 8.0, 9: 7.5, 3: 7.0, 10: 6.0, 2: 5.0, 8: 4.0, 7: 3.0, 6: 2.0, 1: 1.0}


def _samples():
    # user 7: 101+ 102- 103+ | val 104+ | test 105+ ; user 9: 106+ 107+ 101- | val 108- | test 109+
    inter = pd.DataFrame({
        "user_id": [7] * 5 + [9] * 5,
        "item_id": [101, 102, 103, 104, 105, 106, 107, 101, 108, 109],
        "timestamp": [1, 2, 3, 4, 5, 1, 2, 3, 4, 5],
        "rating": [5.0, 1.0, 5.0, 5.0, 5.0, 5.0, 5.0, 1.0, 2.0, 4.0],
    })
    items = pd.DataFrame({"item_id": np.arange(101, 111), "title": [f"t{k}" for k in range(10)],
                          "text": ["x"] * 10, "image_path": [None] * 10})
    raw = RawDataset(name="hand", items=items, interactions=inter, users=None, attribute_columns=(),
                     load_image=lambda i: None)
    return build_samples(raw, DataConfig(max_history=3, cold_item_frac=0.0, val_frac=0.2, test_frac=0.2))


class TableModel(nn.Module):
    """Scores every item by SCORES whatever the user; records the histories it was handed."""

    def __init__(self, num_items: int):
        super().__init__()
        self.table = torch.tensor([0.0] + [SCORES[i] for i in range(1, num_items + 1)])   # (I+1,)
        self.num_items = num_items
        self.seen: list[list[int]] = []

    def score(self, user, history, items, **_):                    # (B,), (B, L), (B, K) -> (B, K)
        self.seen += history.tolist()
        return self.table[items]

    def catalogue(self):
        return None

    def pair_scores(self, catalogue, **_):
        return None

    def score_catalogue(self, user, history, catalogue, scores=None):   # (B,), (B, L) -> (B, I)
        self.seen += history.tolist()
        return self.table[1:].repeat(len(user), 1)                  # a fresh (B, I), not a view


def test_samples_are_split_as_the_hand_layout_says():
    s = _samples()
    assert s.user_ids.tolist() == [7, 9]
    assert s.item[s.splits["test"]].tolist() == [5, 9] and s.item[s.splits["val"]].tolist() == [4, 8]


def test_positives_per_split_and_without_splits():
    s = _samples()
    assert positives(s, 0, ("train",)) == {1, 3}
    assert positives(s, 0, ("train", "val")) == {1, 3, 4}
    assert positives(s, 1, ("train", "val", "val_cold")) == {6, 7}      # a split the data lacks is skipped
    assert positives(s, 1, ()) == set()


def test_latest_history_holds_every_positive_up_to_the_last_event():
    s = _samples()
    assert latest_history(s, 0).tolist() == [3, 4, 5]                  # L = 3: the test positive is in it
    assert latest_history(s, 1).tolist() == [6, 7, 9]


def test_recommend_scores_from_the_history_before_the_test_period_and_excludes_train_and_val():
    s = _samples()
    model = TableModel(s.num_items)
    recs = recommend(model, s, np.array([0, 1]), k=3, device=CPU)
    # user 7 excludes 101, 103 (train) and 104 (val): 105 (the test positive), 109, 110
    # user 9 excludes 106, 107 (train positives; negatives stay): 105, 104, 109 (its test positive)
    assert recs == {"7": [[105, 9.0], [109, 7.5], [110, 6.0]], "9": [[105, 9.0], [104, 8.0], [109, 7.5]]}
    assert model.seen == [[1, 3, 4], [0, 6, 7]]                          # neither holds a test-period item


def test_recommend_for_a_user_without_test_samples_excludes_every_positive():
    s = _samples()
    s.splits["test"] = s.splits["test"][s.user[s.splits["test"]] == 1]   # user 7's test sample is gone
    model = TableModel(s.num_items)
    recs = recommend(model, s, np.array([0]), k=2, device=CPU)
    assert recs == {"7": [[109, 7.5], [110, 6.0]]}                        # 101, 103, 104, 105 excluded
    assert model.seen == [[3, 4, 5]]


def test_evaluate_topk_hand_computed_recall_and_ndcg():
    s = _samples()
    out = evaluate_topk(TableModel(s.num_items), s, k=3, device=CPU)
    # user 7: 105 at rank 1 -> recall 1, ndcg 1; user 9: 109 at rank 3 -> recall 1, ndcg 1/log2(4)
    assert out["test/recall_at_3"] == pytest.approx(1.0)
    assert out["test/ndcg_at_3"] == pytest.approx((1.0 + 1.0 / math.log2(4)) / 2)
    out = evaluate_topk(TableModel(s.num_items), s, k=2, device=CPU)
    assert out["test/recall_at_2"] == pytest.approx(0.5) and out["test/ndcg_at_2"] == pytest.approx(0.5)


def _with_cold_positive():
    """The hand layout plus two cold positives of user 7: 102 at ts 2 (before the test period), 110 at ts 6 (in it)."""
    s = _samples()
    label = np.r_[s.label, 1.0].astype(np.float32)
    label[1] = 1.0                                                         # 102 at ts 2: now a positive
    splits = {**s.splits, "train": s.splits["train"][s.splits["train"] != 1], "test_cold": np.array([1, 10])}
    s = replace(s, user=np.r_[s.user, 0], item=np.r_[s.item, 10], label=label, timestamp=np.r_[s.timestamp, 6],
                history=np.r_[s.history, [[3, 4, 5]]], splits=splits)      # row 10: 110 at ts 6
    return s


def test_held_out_input_excludes_earlier_cold_positives_but_not_later_ones():
    s = _with_cold_positive()
    history, exclude = held_out_input(s, 0)
    assert history.tolist() == [1, 3, 4] and exclude == {1, 2, 3, 4}     # 110 (ts 6) is in the test period


def test_test_period_positives_are_the_test_and_later_cold_positives():
    s = _with_cold_positive()
    start, found = views_user.test_period(s, 0)
    assert start == 5 and found == {105, 110}                             # not 102: a cold positive before it
    assert views_user.test_positives(s, 0) == {105, 110}
    assert views_user.test_period(s, 1) == (5, {109})
    s.splits["test"] = s.splits["test"][s.user[s.splits["test"]] == 1]
    assert views_user.test_period(s, 0) == (None, set())   # no test sample: no test period
