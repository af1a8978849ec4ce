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


def colour_columns(data: RunData) -> list[str]:
    """Attribute columns to colour by; binary flag columns (MovieLens genres) collapse into one 'genre' choice."""
    attrs: pd.DataFrame = data.samples.item_attributes
    cols = [c for c in data.raw.attribute_columns if c in attrs]
    if cols and all(pd.api.types.is_numeric_dtype(attrs[c]) and set(attrs[c].dropna().unique()) <= {0, 1}
                    for c in cols):
        return ["genre"]
    return cols


def attribute_colours(data: RunData, indices: np.ndarray, column: str) -> list[str]:
    """Per-item colour label: the column's value, or for 'genre' the first set flag ('none' if no flag)."""
    attrs: pd.DataFrame = data.samples.item_attributes
    rows = attrs.reindex([int(i) for i in indices])
    if column != "genre":
        return [str(v) for v in rows[column]] if column in rows else ["none"] * len(indices)
    cols = [c for c in data.raw.attribute_columns if c in attrs]
    labels = []
    for _, row in rows[cols].iterrows():
        on = [c for c in cols if pd.notna(row[c]) and row[c] == 1]
        labels.append(on[0] if on else "none")
    return labels
