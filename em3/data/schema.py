"""The one item/interaction schema every source loads into, and the sample set built from it.

Shape letters: N samples, L history length, I items (content rows I+1, row 0 = padding),
U users, F user-feature fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from PIL import Image

# Column contracts, checked by every loader (see README "Data schema").
ITEM_COLUMNS = ("item_id", "title", "text")          # + image_path (str or None) + attribute columns
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")  # + rating (float) or label (0/1)

PAD_INDEX = 0       # item index and ID row of padding
UNKNOWN_ID = 1      # ID row shared by every cold item (its own ID is never trained)


@dataclass(frozen=True)
class RawDataset:
    """A dataset as loaded: items, interactions, users and a way to get each item's image."""

    name: str                                   # e.g. "synthetic-tiny", "movielens-100k", "files:<dir>"
    items: pd.DataFrame                         # item_id (int64, unique), title, text, image_path, *attribute_columns
    interactions: pd.DataFrame                  # user_id, item_id, timestamp (int64 s), rating (float) and/or label
    users: pd.DataFrame | None                  # user_id + optional features
    attribute_columns: tuple[str, ...]          # categorical/binary item attributes (genres, latent attributes)
    load_image: Callable[[int], Image.Image | None] = field(repr=False)  # item_id -> RGB image, None if missing/unreadable
    fingerprint: str = ""                       # hash of the inputs: a change invalidates the feature cache
    ground_truth: dict[str, np.ndarray] | None = None  # synthetic only: attributes, tastes, modality masks
    image_size: tuple[int, int] = (0, 0)        # (H, W) native image size of the source (0, 0 = varies)
    user_feature_columns: tuple[str, ...] = ()  # the users-table columns data.user_features='auto' encodes
    item_fields: tuple[str, ...] = ()           # item-table metadata columns the tabular modality tokenises
    loaders: Mapping[str, Callable[[int], Any]] = field(default_factory=dict, repr=False)
    #   per-modality raw inputs beyond the image, by modality name: item_id -> the modality's input or None
    #   (e.g. "audio": a mono float32 waveform at em3.data.synthetic_audio.SAMPLE_RATE)


@dataclass(frozen=True)
class UserFeatures:
    """Each user's features as integer codes, one column per field; code 0 = unknown or missing."""

    codes: np.ndarray                           # (U, F) int64, row u = user index u
    names: tuple[str, ...]                      # (F,) the users-table column of each field
    sizes: tuple[int, ...]                      # (F,) codes of each field, incl. 0 (an embedding table's rows)

    @property
    def num_fields(self) -> int:
        return len(self.names)

    @staticmethod
    def none(num_users: int = 0) -> "UserFeatures":
        """No fields (F = 0): a dataset without a users table, or data.user_features empty."""
        return UserFeatures(codes=np.zeros((num_users, 0), dtype=np.int64), names=(), sizes=())


@dataclass(frozen=True)
class SampleSet:
    """Indexed samples with histories and splits, ready for tensors.

    Item *index* 1..I addresses content rows; `id_index[item]` maps it to an ID-embedding
    row (0 padding, 1 the shared unknown ID of cold items, 2.. warm items).
    """

    num_users: int
    num_items: int                              # I
    item_ids: np.ndarray                        # (I,) original item_id of item index i+1
    user_ids: np.ndarray                        # (U,) original user_id of user index u
    id_index: np.ndarray                        # (I+1,) int64 ID row of each item index
    num_id_rows: int                            # rows of the item-ID table (incl. pad and unknown)
    cold_items: np.ndarray                      # (C,) item indices withheld as cold (test- and val-cold)
    user: np.ndarray                            # (N,) int64 user index
    item: np.ndarray                            # (N,) int64 item index, 1..I
    label: np.ndarray                           # (N,) float32 0/1
    rating: np.ndarray                          # (N,) float32, NaN where the source gave labels only
    timestamp: np.ndarray                       # (N,) int64
    history: np.ndarray                         # (N, L) int64 earlier positive item indices, most recent last, 0-padded left
    history_len: np.ndarray                     # (N,) int64 real entries in history
    splits: dict[str, np.ndarray]               # "train", "val", "test", "test_cold" [, "val_cold"] -> row indices
    item_attributes: pd.DataFrame               # (I+1 rows, index = item index) attribute columns + title, for plots
    user_features: UserFeatures = field(default_factory=UserFeatures.none)  # (U, F) codes; F = 0: none
