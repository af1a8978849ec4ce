"""Sample construction: labels, leak-free histories, the per-user time split and cold items."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from em3.config import DataConfig
from em3.data.samples import build_samples, draw_cold_items, draw_val_cold_items
from em3.data.schema import PAD_INDEX, UNKNOWN_ID, RawDataset
from em3.data.synthetic import generate
from em3.errors import DataError


def _raw(interactions: pd.DataFrame, n_items: int = 10) -> RawDataset:
    items = pd.DataFrame({"item_id": np.arange(101, 101 + n_items), "title": [f"t{k}" for k in range(n_items)],
                          "text": ["x"] * n_items, "image_path": [None] * n_items})
    return RawDataset(name="hand", items=items, interactions=interactions, users=None, attribute_columns=(),
                      load_image=lambda i: None)


def _naive_history(s, row: int, max_len: int) -> list[int]:
    """The definition, one sample at a time: the user's positives strictly earlier, in time order."""
    same = np.flatnonzero((s.user == s.user[row]) & (s.timestamp < s.timestamp[row]) & (s.label > 0.5))
    same = same[np.lexsort((same, s.timestamp[same]))]
    return s.item[same][-max_len:].tolist()


def test_hand_computed_histories_ties_and_padding():
    inter = pd.DataFrame({
        "user_id": [7, 7, 7, 7, 7, 9],
        "item_id": [101, 102, 103, 104, 105, 101],
        "timestamp": [10, 20, 20, 30, 40, 5],
        "rating": [5.0, 4.0, 1.0, 4.0, 2.0, 5.0],
    })
    s = build_samples(_raw(inter), DataConfig(max_history=2, cold_item_frac=0.0, val_frac=0.0, test_frac=0.0))
    # rows are sorted by (user, time): user 7 first (index 0), then user 9
    assert s.user.tolist() == [0, 0, 0, 0, 0, 1]
    assert s.label.tolist() == [1, 1, 0, 1, 0, 1]                      # rating >= 4
    # item indices: 101 -> 1, 102 -> 2, ...
    assert s.history.tolist() == [
        [0, 0],      # t=10: nothing earlier
        [0, 1],      # t=20: 101; 102 is itself, 103 shares its timestamp (not earlier)
        [0, 1],      # t=20: the same-time positive 102 is NOT earlier
        [1, 2],      # t=30: 101, 102 (103 was negative)
        [2, 4],      # t=40: last L=2 of 101, 102, 104, most recent last
        [0, 0],      # another user's history is separate
    ]
    assert s.history_len.tolist() == [0, 1, 1, 2, 2, 0]
    assert np.isnan(s.rating).sum() == 0 and s.rating[0] == 5.0


def test_threshold_and_given_labels():
    inter = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [101, 102, 103], "timestamp": [1, 2, 3],
                          "rating": [3.0, 3.5, 5.0]})
    s = build_samples(_raw(inter), DataConfig(positive_threshold=3.5, cold_item_frac=0.0))
    assert s.label.tolist() == [0, 1, 1]
    labelled = inter.drop(columns="rating").assign(label=[1, 0, 1])
    s = build_samples(_raw(labelled), DataConfig(cold_item_frac=0.0))
    assert s.label.tolist() == [1, 0, 1] and np.isnan(s.rating).all()


@pytest.fixture(scope="module")
def tiny_samples():
    raw = generate("tiny", 0)
    return raw, build_samples(raw, DataConfig(max_history=10, split_seed=0))


def test_vectorised_histories_match_the_definition(tiny_samples):
    _, s = tiny_samples
    rows = np.random.default_rng(0).choice(len(s.label), size=400, replace=False)
    for r in rows:
        expect = _naive_history(s, r, 10)
        got = s.history[r]
        assert got[got != PAD_INDEX].tolist() == expect
        assert (got[: 10 - len(expect)] == PAD_INDEX).all()          # padding on the left
        assert s.history_len[r] == len(expect)


def test_no_leakage_in_val_and_test(tiny_samples):
    """An evaluation sample's history holds only items the user liked strictly before it, never itself."""
    _, s = tiny_samples
    for split in ("val", "test", "test_cold"):
        for r in s.splits[split]:
            h = s.history[r][s.history[r] != PAD_INDEX]
            assert s.item[r] not in h                                  # a user sees an item once here
            earlier = (s.user == s.user[r]) & (s.timestamp < s.timestamp[r]) & (s.label > 0.5)
            assert set(h.tolist()) <= set(s.item[earlier].tolist())


def test_split_proportions_are_per_user_and_chronological(tiny_samples):
    _, s = tiny_samples
    all_rows = np.concatenate([s.splits[k] for k in ("train", "val", "test", "test_cold")])
    assert np.array_equal(np.sort(all_rows), np.arange(len(s.label)))  # a partition of the samples
    is_cold = np.isin(s.item, s.cold_items)
    for u in range(s.num_users):
        rows = np.flatnonzero(s.user == u)
        warm = {k: np.intersect1d(s.splits[k], rows) for k in ("train", "val", "test")}
        n = len(rows)
        period = {"train": rows[: n - 2 * int(np.floor(0.1 * n + 0.5))],
                  "test": rows[n - int(np.floor(0.1 * n + 0.5)):]}
        assert np.array_equal(warm["train"], period["train"][~is_cold[period["train"]]])
        assert np.array_equal(warm["test"], period["test"][~is_cold[period["test"]]])
        if len(warm["train"]) and len(warm["val"]):
            assert s.timestamp[warm["train"]].max() <= s.timestamp[warm["val"]].min()
        if len(warm["val"]) and len(warm["test"]):
            assert s.timestamp[warm["val"]].max() <= s.timestamp[warm["test"]].min()
    total = len(s.label)
    share = {k: len(s.splits[k]) / total for k in s.splits}
    assert 0.7 < share["train"] / (1 - share["test_cold"]) < 0.85
    assert 0.07 < share["val"] / (1 - share["test_cold"]) < 0.13


def test_cold_items_are_never_trained(tiny_samples):
    raw, s = tiny_samples
    assert len(s.cold_items) == 20                                    # 10% of 200
    for k in ("train", "val", "test"):
        assert not np.isin(s.item[s.splits[k]], s.cold_items).any()
    assert np.array_equal(np.flatnonzero(np.isin(s.item, s.cold_items)), s.splits["test_cold"])
    # ID rows: 0 pad, 1 the shared unknown row, 2.. one per warm item, none for a cold item
    assert s.id_index[0] == 0 and (s.id_index[s.cold_items] == UNKNOWN_ID).all()
    warm = np.setdiff1d(np.arange(1, s.num_items + 1), s.cold_items)
    assert sorted(s.id_index[warm].tolist()) == list(range(2, s.num_id_rows))
    assert (s.id_index[s.item[np.concatenate([s.splits["train"], s.splits["val"]])]] >= 2).all()
    cold_rows = set(s.id_index[s.cold_items].tolist())
    assert cold_rows == {UNKNOWN_ID}
    assert s.item_attributes.shape[0] == s.num_items + 1 and set(raw.attribute_columns) <= set(s.item_attributes)


def test_val_cold_split_is_its_own_cold_set_and_leaves_test_cold_alone(tiny_samples):
    raw, plain = tiny_samples
    assert "val_cold" not in plain.splits                              # only when asked for
    s = build_samples(raw, DataConfig(max_history=10, split_seed=0, val_cold_item_frac=0.1))
    assert np.array_equal(s.splits["test_cold"], plain.splits["test_cold"])   # same test-cold items and rows
    val_cold = np.unique(s.item[s.splits["val_cold"]])
    test_cold = np.unique(s.item[s.splits["test_cold"]])
    assert len(np.intersect1d(val_cold, test_cold)) == 0
    assert len(s.cold_items) == 40 and set(val_cold) | set(test_cold) <= set(s.cold_items.tolist())
    assert (s.id_index[val_cold] == UNKNOWN_ID).all()                  # no ID row of their own
    for k in ("train", "val", "test"):
        assert not np.isin(s.item[s.splits[k]], val_cold).any()
    all_rows = np.concatenate(list(s.splits.values()))
    assert np.array_equal(np.sort(all_rows), np.arange(len(s.label)))  # still a partition
    again = build_samples(raw, DataConfig(max_history=10, split_seed=0, val_cold_item_frac=0.1))
    assert np.array_equal(again.splits["val_cold"], s.splits["val_cold"])


def test_val_cold_draw_comes_from_the_rest_and_refuses_too_many():
    test_cold = draw_cold_items(100, 0.1, seed=3)
    v = draw_val_cold_items(100, 0.2, test_cold, seed=3)
    assert len(v) == 20 and len(np.intersect1d(v, test_cold)) == 0
    with pytest.raises(DataError, match="val_cold_item_frac=0.95"):
        draw_val_cold_items(100, 0.95, test_cold, seed=3)


def test_cold_draw_is_deterministic_and_seeded():
    a = draw_cold_items(1682, 0.1, seed=0)
    assert np.array_equal(a, draw_cold_items(1682, 0.1, seed=0))
    assert len(a) == 168 and a.min() >= 1 and a.max() <= 1682 and len(np.unique(a)) == len(a)
    assert not np.array_equal(a, draw_cold_items(1682, 0.1, seed=1))
    assert len(draw_cold_items(10, 0.0, seed=0)) == 0


def test_long_history_is_capped_and_matches_the_definition():
    raw = generate("demo", 0)
    s = build_samples(raw, DataConfig(max_history=200))
    assert s.history.shape == (len(raw.interactions), 200) and s.history.dtype == np.int64
    assert s.history_len.max() <= 200
    rows = np.random.default_rng(0).choice(len(s.user), size=40, replace=False)
    rows = np.r_[rows, np.argmax(s.history_len)]                      # and the longest history there is
    for row in rows:                                                   # the vectorised build = the definition
        want = _naive_history(s, int(row), 200)
        assert s.history_len[row] == len(want)
        assert s.history[row][200 - len(want):].tolist() == want and not s.history[row][:200 - len(want)].any()


@pytest.mark.parametrize("change, match", [
    (lambda d: d.drop(columns="timestamp"), r"missing column\(s\) timestamp"),
    (lambda d: d.assign(item_id=[101, 999, 103]), r"row 2, column 'item_id': unknown item_id 999"),
    (lambda d: d.assign(timestamp=[1.0, np.nan, 3.0]), r"row 2, column 'timestamp': got an empty value"),
    (lambda d: d.assign(rating=["5", "good", "4"]), r"row 2, column 'rating': got 'good'; expected a numeric"),
    (lambda d: d.drop(columns="rating"), r"needs a 'rating' or a 'label' column"),
    (lambda d: d.iloc[:0], r"no interactions"),
])
def test_bad_interactions_raise_data_errors(change, match):
    inter = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [101, 102, 103], "timestamp": [1, 2, 3],
                          "rating": [5.0, 1.0, 4.0]})
    with pytest.raises(DataError, match=match):
        build_samples(_raw(change(inter)), DataConfig(cold_item_frac=0.0))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(101, 106), st.integers(0, 6), st.integers(1, 5)),
                min_size=1, max_size=40),
       st.integers(1, 4))
def test_histories_match_the_definition_on_random_logs(rows, max_len):
    """Random logs with many timestamp ties: the vectorised build equals the one-by-one definition."""
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"]).astype({"rating": float})
    s = build_samples(_raw(inter, n_items=6), DataConfig(max_history=max_len, cold_item_frac=0.0))
    for r in range(len(s.label)):
        expect = _naive_history(s, r, max_len)
        assert s.history[r][max_len - len(expect):].tolist() == expect
        assert (s.history[r][: max_len - len(expect)] == PAD_INDEX).all()
