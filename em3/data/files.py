"""A user's own dataset: Parquet/CSV items and interactions (+ optional users), an image and a sound folder.

Layout of `data_dir`:
    items.parquet | items.csv                item_id (int, unique), title, text, image_path (optional,
                                             relative to images/), audio_path (optional, relative to audio/),
                                             any other column = a categorical attribute and an item field
    interactions.parquet | interactions.csv  user_id, item_id, timestamp (unix seconds), rating and/or label (0/1)
    users.parquet | users.csv                optional: user_id + any user features (data.user_features='auto'
                                             encodes every column but user_id)
    images/                                  optional: the files image_path names
    audio/                                   optional: the WAV files audio_path names (PCM 8/16/24/32-bit, mono
                                             or stereo, any rate: read as mono float32 at SAMPLE_RATE)
Parquet wins when both exist. Every problem raises DataError naming the file, row and column; a missing
or unreadable image or sound is not a problem but a masked item (counted; sounds also logged).
With an audio_path column the dataset has `loaders["audio"]` (the audio modality can be fused).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from em3.data.images import FolderImages
from em3.data.schema import RawDataset
from em3.data.tables import (find_table, int_column, interactions_frame, read_table, require_columns,
                             require_dir, require_known, require_unique, text_column)
from em3.data.wav import FolderAudio
from em3.errors import DataError

LOADER_VERSION = "files/1"
# item column -> the folder (beside the tables) its relative paths point into
MEDIA = {"image_path": "images", "audio_path": "audio"}


def _fingerprint(tables: list[Path], root: Path) -> str:
    h = hashlib.sha256(LOADER_VERSION.encode())
    for f in tables:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    for folder in MEDIA.values():
        media = root / folder
        if not media.is_dir():
            continue
        if folder != "images":   # images/ hashes as before files had audio/: their caches stay valid
            h.update(f"{folder}/".encode())
        for top, _, names in sorted(os.walk(media)):
            for name in sorted(names):
                st = os.stat(os.path.join(top, name))
                h.update(f"{os.path.relpath(os.path.join(top, name), media)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _inside(folder: Path, rel: str, *, path: Path, row: int, column: str) -> str:
    """folder/<rel>, refused unless it stays inside folder/ (an absolute or ../ path would read elsewhere)."""
    base = folder.resolve()
    try:
        full = (base / rel).resolve()
    except (OSError, ValueError):   # a NUL byte, a symlink loop
        full = None
    if full is None or Path(rel).is_absolute() or not full.is_relative_to(base):
        raise DataError(f"{path}: row {row}, column {column!r}: got {rel!r}; expected a path relative to "
                        f"{folder} that stays inside it")
    return str(full)


def _media_paths(df: pd.DataFrame, column: str, folder: Path, *, path: Path) -> pd.Series:
    """The column's relative paths resolved inside folder (None where empty)."""
    rel = text_column(df, column)
    return pd.Series([_inside(folder, r, path=path, row=k + 1, column=column) if r else None
                      for k, r in enumerate(rel)], dtype=object)


def _items(path: Path, root: Path) -> pd.DataFrame:
    df = read_table(path)
    require_columns(df, ("item_id", "title", "text"), path=path)
    ids = int_column(df, "item_id", path=path, expected="an integer item id")
    require_unique(ids, path=path, column="item_id")
    items = pd.DataFrame({"item_id": ids, "title": text_column(df, "title").to_numpy(),
                          "text": text_column(df, "text").to_numpy()})
    for column, folder in MEDIA.items():
        if column in df.columns:
            items[column] = _media_paths(df, column, root / folder, path=path)
        elif column == "image_path":   # always present (None = no image); audio_path only when given
            items[column] = pd.Series([None] * len(items), dtype=object)
    for c in df.columns:
        if c not in items.columns:
            items[str(c)] = df[c].to_numpy()
    return items


def load_files(data_dir: str | Path) -> RawDataset:
    """Load a dataset laid out as the module docstring says."""
    root = require_dir(data_dir, what="dataset directory")
    items_path = find_table(root, "items")
    inter_path = find_table(root, "interactions")
    users_path = find_table(root, "users", required=False)
    items = _items(items_path, root)
    interactions = interactions_frame(read_table(inter_path), path=inter_path,
                                      known_items=items["item_id"].to_numpy(), items_path=items_path)
    users = None
    if users_path is not None:
        df = read_table(users_path)
        require_columns(df, ("user_id",), path=users_path)
        user_ids = int_column(df, "user_id", path=users_path, expected="an integer user id")
        require_unique(user_ids, path=users_path, column="user_id")
        users = df.assign(user_id=user_ids)
        require_known(interactions["user_id"].to_numpy(), user_ids, path=inter_path, column="user_id",
                      known_in=str(users_path))
    attributes = tuple(c for c in items.columns if c not in ("item_id", "title", "text", *MEDIA))
    loaders = ({"audio": FolderAudio(dict(zip(items["item_id"].tolist(), items["audio_path"].tolist())))}
               if "audio_path" in items.columns else {})
    tables = [p for p in (items_path, inter_path, users_path) if p is not None]
    return RawDataset(
        name=f"files:{root.name}", items=items, interactions=interactions, users=users,
        attribute_columns=attributes, item_fields=attributes, loaders=loaders,
        load_image=FolderImages(dict(zip(items["item_id"].tolist(), items["image_path"].tolist()))),
        fingerprint=_fingerprint(tables, root), image_size=(0, 0),
        user_feature_columns=tuple(str(c) for c in users.columns if c != "user_id") if users is not None else (),
    )
