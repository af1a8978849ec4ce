"""A run's dataset rebuilt from its config.json (cached per config): titles, images and samples for the pages."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import store


@dataclass
class RunData:
    """The rebuilt dataset of a run (raw items and images, indexed samples)."""

    raw: Any          # em3.data.schema.RawDataset
    samples: Any      # em3.data.schema.SampleSet

    def item_id(self, index: int) -> int:
        """Item index (1..I) → original item_id."""
        return int(self.samples.item_ids[int(index) - 1])

    def title(self, index: int) -> str:
        attrs = self.samples.item_attributes
        if "title" in attrs and int(index) in attrs.index:
            return str(attrs.loc[int(index), "title"])
        return f"item {self.item_id(index)}"

    def image(self, index: int) -> Any:
        try:
            return self.raw.load_image(self.item_id(index))
        except Exception:  # noqa: BLE001 - a broken poster must not break the page
            return None


@st.cache_resource(show_spinner="Rebuilding the run's dataset…", max_entries=4)
def _build(config_json: str) -> RunData:
    from em3.config import from_dict
    from em3.data.load import load_dataset
    from em3.data.samples import build_samples
    cfg = from_dict(json.loads(config_json))
    raw = load_dataset(cfg.data)
    return RunData(raw=raw, samples=build_samples(raw, cfg.data))


def run_data(run_id: str) -> tuple[RunData | None, str]:
    """(RunData, '') or (None, why not): missing config.json, older config version, unreadable data."""
    cfg = store.artifact_json(store.uri(), run_id, "config.json")
    if cfg is None:
        return None, "this run has no config.json artifact (still starting, or logged by another tool)"
    try:
        return _build(json.dumps(cfg, sort_keys=True)), ""
    except ImportError as exc:
        return None, f"the data loaders are not available in this checkout ({exc})"
    except Exception as exc:  # noqa: BLE001 - older config versions, moved data dirs: say what
        return None, f"could not rebuild the run's dataset from its config.json: {type(exc).__name__}: {exc}"


def _flag_columns(attrs: pd.DataFrame, cols: list[str]) -> list[str]:
    """The binary 0/1 columns among cols (MovieLens's 19 genre flags)."""
    return [c for c in cols if pd.api.types.is_numeric_dtype(attrs[c]) and set(attrs[c].dropna().unique()) <= {0, 1}]


def colour_columns(data: RunData) -> list[str]:
    """Attribute columns to colour by, the most telling first: the other columns (MovieLens's primary 'genre'),
    then the binary flag columns as one 'genre' choice (the first flag set) where no column has that name,
    then each flag on its own ('Action' / 'not Action')."""
    attrs: pd.DataFrame = data.samples.item_attributes
    cols = [c for c in data.raw.attribute_columns if c in attrs]
    flags = _flag_columns(attrs, cols)
    others = [c for c in cols if c not in flags]
    return [*others, *(["genre"] if flags and "genre" not in others else []), *flags]


def attribute_colours(data: RunData, indices: np.ndarray, column: str) -> list[str]:
    """Per-item colour label: the column's value ('Action' / 'not Action' for a flag column), or for a 'genre'
    that is no column the first set flag ('none' if no flag)."""
    attrs: pd.DataFrame = data.samples.item_attributes
    rows = attrs.reindex([int(i) for i in indices])
    cols = [c for c in data.raw.attribute_columns if c in attrs]
    flags = _flag_columns(attrs, cols)
    if column in flags:
        return [column if v == 1 else f"not {column}" if v == 0 else "none" for v in rows[column]]
    if column in rows:
        return ["none" if pd.isna(v) else str(v) for v in rows[column]]
    if column != "genre":
        return ["none"] * len(indices)
    labels = []
    for _, row in rows[flags].iterrows():
        on = [c for c in flags if pd.notna(row[c]) and row[c] == 1]
        labels.append(on[0] if on else "none")
    return labels
