"""The tabular modality: an item's metadata fields (year, runtime, language, ...) as one token per field.

Token of field f (C = F + 2 + B): [one-hot f (F) | z-scored value (numeric; 0 otherwise) | missing flag |
one-hot bucket (B)], where the bucket is the value's quantile bucket (numeric: B equal-count buckets over
the catalogue) or its category (the B-1 most frequent values of the catalogue, the rest in one 'other'
bucket). No learned part here: the Fusion-Q-Former's projection of this modality learns a field's
embedding from its one-hot and a value's from the rest. A missing value is still a real token (the flag
says it is missing), so every item with fields embeds.

The fields are the source's `RawDataset.item_fields` (MovieLens: year, runtime, original_language,
vote_count, vote_average; a files dataset: its extra item columns, see em3/data/files.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from em3.errors import CacheError
from em3.modalities.base import Encoded, Modality

RECIPE = "tabular/1"   # bump when the token layout changes: part of the cache key
Z_CLIP = 5.0


@dataclass(frozen=True)
class Field:
    """How one column becomes a token's value part."""

    name: str
    numeric: bool
    edges: np.ndarray                   # numeric: B-1 inner quantile edges
    mean: float
    std: float
    vocabulary: dict[str, int]          # categorical: value -> bucket (the rest -> B-1)


def _field(name: str, column: pd.Series, buckets: int) -> Field:
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    if numeric:
        x = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        real = x[np.isfinite(x)]
        if len(real) == 0:
            return Field(name, True, np.zeros(0), 0.0, 1.0, {})
        edges = np.unique(np.quantile(real, np.linspace(0, 1, buckets + 1)[1:-1]))
        return Field(name, True, edges, float(real.mean()), float(real.std()) or 1.0, {})
    values = column.dropna().astype(str)
    top = values.value_counts().index[: buckets - 1]
    return Field(name, False, np.zeros(0), 0.0, 1.0, {v: k for k, v in enumerate(top)})


@dataclass
class _TabularBatches:
    table: pd.DataFrame                 # indexed by item_id, the fields' columns
    fields: list[Field]
    buckets: int
    source: str
    shape: tuple[int, int]
    grid: None = None

    def encode(self, item_ids: np.ndarray) -> Encoded:
        n, nf, b = len(item_ids), len(self.fields), self.buckets
        tokens = np.zeros((n, nf, nf + 2 + b), dtype=np.float32)
        rows = self.table.loc[np.asarray(item_ids)]
        labels: list[list[str]] = [[] for _ in range(n)]
        for j, f in enumerate(self.fields):
            tokens[:, j, j] = 1.0
            col = rows[f.name]
            if f.numeric:
                x = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
                missing = ~np.isfinite(x)
                z = np.clip((np.nan_to_num(x, nan=f.mean) - f.mean) / f.std, -Z_CLIP, Z_CLIP)
                tokens[:, j, nf] = np.where(missing, 0.0, z)
                bucket = np.searchsorted(f.edges, np.nan_to_num(x, nan=f.mean), side="right")
                text = [f"{f.name}=?" if m else f"{f.name}={v:g}" for v, m in zip(x, missing)]
            else:
                missing = col.isna().to_numpy()
                bucket = np.array([f.vocabulary.get(str(v), b - 1) for v in col])
                text = [f"{f.name}=?" if m else f"{f.name}={v}" for v, m in zip(col, missing)]
            tokens[:, j, nf + 1] = missing
            hit = ~missing
            tokens[np.flatnonzero(hit), j, nf + 2 + bucket[hit]] = 1.0
            for k in range(n):
                labels[k].append(text[k])
        return Encoded(tokens=tokens, mask=np.ones((n, nf), dtype=bool), labels=labels)


def _columns(raw: Any) -> tuple[str, ...]:
    missing = [c for c in raw.item_fields if c not in raw.items.columns]
    if missing:
        raise CacheError(f"{raw.name}: item_fields {missing} are not columns of the item table")
    return tuple(raw.item_fields)


def _key_inputs(raw: Any, samples: Any, enc: Any) -> dict[str, Any]:
    return {"recipe": RECIPE, "fields": list(_columns(raw)), "buckets": enc.tabular_buckets}


def _open(raw: Any, samples: Any, enc: Any) -> _TabularBatches:
    names = _columns(raw)
    table = raw.items.drop_duplicates("item_id").set_index("item_id")
    known = table.loc[np.asarray(samples.item_ids)]      # the catalogue the statistics come from
    fields = [_field(c, known[c], enc.tabular_buckets) for c in names]
    nf = len(fields)
    return _TabularBatches(table=table[list(names)], fields=fields, buckets=enc.tabular_buckets,
                           source=RECIPE, shape=(nf, nf + 2 + enc.tabular_buckets))


MODALITY = Modality(name="tabular", view="bars", key_inputs=_key_inputs, open=_open,
                    available=lambda raw: len(raw.item_fields) > 0,
                    describe="the item's metadata fields (RawDataset.item_fields), one token per field")
