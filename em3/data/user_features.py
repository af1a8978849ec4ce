"""User features as integer codes aligned with a sample set's user indices: the ranker's user-side input.

- which columns: `data.user_features` names them, or 'auto' takes the loader's standard list
  (`RawDataset.user_feature_columns`); no users table and 'auto' = no fields (F = 0);
- text (and boolean) columns: vocabulary codes 1.. in sorted order of the values;
- numeric columns: quantile buckets 1.. with edges from every user of the users table;
- code 0 = unknown: a missing or empty value, or a user the users table lacks.
Shape letters: U users (of the sample set), F fields.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from em3.config import AUTO_USER_FEATURES, DataConfig
from em3.data.schema import RawDataset, UserFeatures
from em3.data.tables import require_unique
from em3.errors import DataError


def feature_columns(raw: RawDataset, requested: tuple[str, ...]) -> tuple[str, ...]:
    """The users-table columns to encode; DataError naming the field, column and table if one is absent."""
    if requested == (AUTO_USER_FEATURES,):
        return raw.user_feature_columns if raw.users is not None else ()
    where = f"{raw.name} users table"
    if requested and raw.users is None:
        raise DataError(f"data.user_features: names {', '.join(map(repr, requested))} but {raw.name} has no users "
                        "table; use 'auto' or an empty list")
    found = [str(c) for c in raw.users.columns] if raw.users is not None else []
    for name in requested:
        if name not in found:
            raise DataError(f"data.user_features: column {name!r} is not in the {where}; its columns: "
                            f"{', '.join(found)}")
    return requested


def vocabulary_codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Text values -> (codes (N,) int64: 1.. in sorted order of the distinct values, 0 missing/empty, size)."""
    text = np.array(["" if _missing(v) else str(v).strip() for v in values], dtype=str)   # (N,)
    known = text != ""
    vocab = np.unique(text[known])
    codes = np.zeros(len(text), dtype=np.int64)
    codes[known] = 1 + np.searchsorted(vocab, text[known])
    return codes, 1 + len(vocab)


def _missing(value: object) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def bucket_codes(values: pd.Series, *, buckets: int) -> tuple[np.ndarray, int]:
    """Numbers -> (codes (N,) int64: 1.. quantile bucket, 0 missing, size).

    Edges are data values (inverted-CDF quantiles) and bucket k holds (edge k-1, edge k], so no bucket is
    empty and a feature with few distinct values gets that many buckets at most.
    """
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    known = np.isfinite(x)
    codes = np.zeros(len(x), dtype=np.int64)
    if not known.any():
        return codes, 1
    q = np.linspace(0, 1, buckets + 1)[1:-1]                                            # (buckets-1,)
    edges = np.unique(np.quantile(x[known], q, method="inverted_cdf"))
    edges = edges[edges < x[known].max()]                                               # the top bucket holds the max
    codes[known] = 1 + np.searchsorted(edges, x[known], side="left")
    return codes, 2 + len(edges)


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def encode_user_features(raw: RawDataset, user_ids: np.ndarray, cfg: DataConfig) -> UserFeatures:
    """(U, F) codes of the configured columns for the sorted user ids of a sample set (row u = user_ids[u])."""
    columns = feature_columns(raw, cfg.user_features)
    if not columns:
        return UserFeatures.none(len(user_ids))
    users = raw.users
    table_ids = users["user_id"].to_numpy(dtype=np.int64)
    require_unique(table_ids, path=f"{raw.name} users table", column="user_id")
    row = pd.Series(np.arange(len(users)), index=table_ids)
    at = row.reindex(user_ids).to_numpy(dtype=np.float64)                 # (U,) table row of each user, NaN if none
    present = np.isfinite(at)
    codes = np.zeros((len(user_ids), len(columns)), dtype=np.int64)       # (U, F)
    sizes = []
    for f, name in enumerate(columns):
        values = users[name]
        table_codes, size = (bucket_codes(values, buckets=cfg.user_feature_buckets) if _is_numeric(values)
                             else vocabulary_codes(values))               # over every user of the table
        codes[present, f] = table_codes[at[present].astype(np.int64)]
        sizes.append(size)
    return UserFeatures(codes=codes, names=tuple(columns), sizes=tuple(sizes))
