"""From a RawDataset to indexed samples: labels, leak-free histories, the per-user time split and cold items.

The protocol (docs EM3_NOTES "Evaluation protocol"):
- label = given `label`, else rating >= cfg.positive_threshold;
- history of a sample = the user's positive items with a timestamp strictly before its own
  (same timestamp = not earlier), most recent last, the last L kept, 0-padded on the left;
- each user's events in time order (ties keep file order): first 80% train, next 10% val, last 10% test;
- cold items (cfg.cold_item_frac of the items, drawn with cfg.split_seed): none of their events is a
  train/val/test target; all their events form test_cold; their ID row is UNKNOWN_ID everywhere;
- validation-cold items (cfg.val_cold_item_frac of the items, drawn from the rest with the same seed;
  only when > 0): the same treatment, their events form val_cold. The test-cold draw does not depend
  on them, so adding a val_cold split leaves test_cold as it was;
- user features (cfg.user_features) as codes per user index (em3/data/user_features.py).
Shape letters as in schema.py: N samples, L history length, I items.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from em3.config import DataConfig
from em3.data.schema import PAD_INDEX, UNKNOWN_ID, RawDataset, SampleSet
from em3.data.tables import float_column, int_column, label_column, require_columns, require_known, require_unique
from em3.data.user_features import encode_user_features
from em3.errors import DataError

_CHUNK = 65_536   # history rows built at a time (bounds the (chunk, L) temporaries)


def _targets(raw: RawDataset, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked (user_id, item_id, timestamp, label, rating) arrays of the interactions."""
    where = f"{raw.name} interactions"
    inter = raw.interactions
    require_columns(inter, ("user_id", "item_id", "timestamp"), path=where)
    if len(inter) == 0:
        raise DataError(f"{where}: no interactions; expected at least one row")
    user_id = int_column(inter, "user_id", path=where, expected="an integer user id")
    item_id = int_column(inter, "item_id", path=where, expected="an integer item id")
    timestamp = int_column(inter, "timestamp", path=where, expected="a unix time in seconds (integer)")
    rating = (float_column(inter, "rating", path=where, expected="a numeric rating")
              if "rating" in inter.columns else np.full(len(inter), np.nan))
    if "label" in inter.columns:
        label = label_column(inter, "label", path=where)
    elif "rating" in inter.columns:
        label = (rating >= cfg.positive_threshold).astype(np.float32)
    else:
        found = ", ".join(map(str, inter.columns))
        raise DataError(f"{where}: needs a 'rating' or a 'label' column; found columns: {found}")
    return user_id, item_id, timestamp, label, rating.astype(np.float32)


def _split_positions(user: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For user-sorted rows: each row's position within its user, and the user's train / train+val counts."""
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    counts = np.diff(np.r_[starts, len(user)])
    pos = np.arange(len(user)) - np.repeat(starts, counts)
    n_test = np.floor(counts * cfg.test_frac + 0.5).astype(np.int64)
    n_val = np.floor(counts * cfg.val_frac + 0.5).astype(np.int64)
    n_train = counts - n_val - n_test
    return pos, np.repeat(n_train, counts), np.repeat(n_train + n_val, counts)


def _histories(user: np.ndarray, timestamp: np.ndarray, item: np.ndarray, label: np.ndarray,
               max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, L) histories for rows sorted by (user, timestamp): earlier positives, strictly before, most recent last."""
    n = len(user)
    positive = label > 0.5
    pos_items = item[positive]                                        # all positives, user- then time-ordered
    before = np.r_[0, np.cumsum(positive)[:-1]]                       # positives in rows before each row
    new_user = np.r_[True, user[1:] != user[:-1]]
    new_time = new_user | np.r_[True, timestamp[1:] != timestamp[:-1]]
    group_start = np.maximum.accumulate(np.where(new_time, np.arange(n), 0))   # first row of its (user, ts)
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
    end = before[group_start]                                         # positives strictly earlier, globally
    length = np.minimum(end - before[user_start], max_len)            # ... of this user, capped at L
    history = np.zeros((n, max_len), dtype=np.int64)
    offsets = np.arange(max_len) - max_len                            # (L,) -L .. -1
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        idx = end[lo:hi, None] + offsets[None, :]                     # (chunk, L)
        keep = offsets[None, :] >= -length[lo:hi, None]
        history[lo:hi] = np.where(keep, pos_items[np.clip(idx, 0, max(len(pos_items) - 1, 0))]
                                  if len(pos_items) else 0, PAD_INDEX)
    return history, length.astype(np.int64)


def draw_cold_items(num_items: int, frac: float, *, seed: int) -> np.ndarray:
    """Sorted item indices (1..I) withheld as cold: round(frac * I) of them, drawn with the seed."""
    n_cold = int(round(frac * num_items))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(np.arange(1, num_items + 1), size=n_cold, replace=False)).astype(np.int64)


def draw_val_cold_items(num_items: int, frac: float, test_cold: np.ndarray, *, seed: int) -> np.ndarray:
    """Sorted item indices withheld as validation-cold: round(frac * I) of the items not in test_cold."""
    n_cold = int(round(frac * num_items))
    rest = np.setdiff1d(np.arange(1, num_items + 1), test_cold)
    if n_cold > len(rest):
        raise DataError(f"data.val_cold_item_frac={frac}: asks for {n_cold} items but only {len(rest)} are not test-cold")
    rng = np.random.default_rng([seed, 1])                            # a stream of its own: test_cold unchanged
    return np.sort(rng.choice(rest, size=n_cold, replace=False)).astype(np.int64)


def build_samples(raw: RawDataset, cfg: DataConfig) -> SampleSet:
    """Index, label, split and attach histories to every interaction of raw, per the module docstring."""
    # step 1: index items (row order of raw.items) and users (sorted ids)
    items_where = f"{raw.name} items"
    require_columns(raw.items, ("item_id", "title"), path=items_where)
    item_ids = int_column(raw.items, "item_id", path=items_where, expected="an integer item id")
    require_unique(item_ids, path=items_where, column="item_id")
    user_id, item_id, timestamp, label, rating = _targets(raw, cfg)
    require_known(item_id, item_ids, path=f"{raw.name} interactions", column="item_id", known_in=items_where)
    by_id = np.argsort(item_ids, kind="stable")
    item = by_id[np.searchsorted(item_ids, item_id, sorter=by_id)] + 1   # (N,) 1..I
    user_ids = np.unique(user_id)
    user = np.searchsorted(user_ids, user_id)

    # step 2: each user's events in time order; ties keep the file order
    order = np.lexsort((np.arange(len(user)), timestamp, user))
    user, item, timestamp, label, rating = user[order], item[order], timestamp[order], label[order], rating[order]

    # step 3: per-user chronological split, cold items out of every warm split
    num_items = len(item_ids)
    test_cold = draw_cold_items(num_items, cfg.cold_item_frac, seed=cfg.split_seed)
    val_cold = (draw_val_cold_items(num_items, cfg.val_cold_item_frac, test_cold, seed=cfg.split_seed)
                if cfg.val_cold_item_frac > 0 else np.zeros(0, dtype=np.int64))
    cold = np.union1d(test_cold, val_cold)
    is_cold = np.isin(item, cold)
    pos, train_end, val_end = _split_positions(user, cfg)
    splits = {
        "train": np.flatnonzero((pos < train_end) & ~is_cold),
        "val": np.flatnonzero((pos >= train_end) & (pos < val_end) & ~is_cold),
        "test": np.flatnonzero((pos >= val_end) & ~is_cold),
        "test_cold": np.flatnonzero(np.isin(item, test_cold)),
    }
    if cfg.val_cold_item_frac > 0:
        splits["val_cold"] = np.flatnonzero(np.isin(item, val_cold))

    # step 4: histories and ID rows (0 pad, 1 unknown = every cold item, 2.. warm items)
    history, history_len = _histories(user, timestamp, item, label, cfg.max_history)
    id_index = np.zeros(num_items + 1, dtype=np.int64)
    warm = np.setdiff1d(np.arange(1, num_items + 1), cold)
    id_index[warm] = 2 + np.arange(len(warm))
    id_index[cold] = UNKNOWN_ID
    attrs = raw.items[["title", *[c for c in raw.attribute_columns if c != "title"]]].copy()
    attrs.index = pd.RangeIndex(1, num_items + 1)
    item_attributes = attrs.reindex(pd.RangeIndex(0, num_items + 1))   # row 0 = padding (empty)

    return SampleSet(
        num_users=len(user_ids), num_items=num_items, item_ids=item_ids, user_ids=user_ids,
        id_index=id_index, num_id_rows=2 + len(warm), cold_items=cold,
        user=user.astype(np.int64), item=item.astype(np.int64), label=label, rating=rating,
        timestamp=timestamp, history=history, history_len=history_len, splits=splits,
        item_attributes=item_attributes, user_features=encode_user_features(raw, user_ids, cfg),
    )
