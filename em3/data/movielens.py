"""MovieLens-100K with TMDB posters and plots, read from the `../shared/data/movielens-100k` layout.

Layout: `ml-100k/u.data` (user, item, rating, unix time; tab-separated), `ml-100k/u.user`
(user|age|gender|occupation|zip), `items.csv` (movie_id, title, 19 genre flags, overview, year,
original_language, runtime, vote_average, vote_count — the tabular modality's fields;
55 movie_ids appear twice: the FIRST row per id is kept) and `posters/<movie_id>.jpg`
(19 movies have none: a masked image, counted, not an error).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from em3.data.images import FolderImages
from em3.data.schema import RawDataset
from em3.data.tables import (int_column, interactions_frame, read_table, require_columns,
                             require_dir, require_known, text_column)
from em3.errors import DataError

LOADER_VERSION = "movielens-100k/1"
GENRES = ("genre_unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "FilmNoir", "Horror", "Musical", "Mystery", "Romance",
          "SciFi", "Thriller", "War", "Western")
POSTER_SIZE = (138, 92)   # (H, W) of the TMDB posters
# items.csv metadata the tabular modality reads (TMDB's: vote_count is a popularity signal collected later)
NUMERIC_FIELDS = ("year", "runtime", "vote_count", "vote_average")
CATEGORICAL_FIELDS = ("original_language",)
# FuxiCTR's DIN baseline fields; zip (~800 values, most users alone in theirs) stays in the table, unused.
USER_FEATURES = ("age", "gender", "occupation")


def _fingerprint(files: list[Path], posters: Path) -> str:
    """Content hash of the tables + name/size/mtime of every poster: any change invalidates caches."""
    h = hashlib.sha256(LOADER_VERSION.encode())
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    if posters.is_dir():
        for entry in sorted(os.scandir(posters), key=lambda e: e.name):
            st = entry.stat()
            h.update(f"{entry.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _items(path: Path, posters: Path) -> pd.DataFrame:
    df = read_table(path)
    require_columns(df, ("movie_id", "title", "overview", *GENRES), path=path)
    ids = int_column(df, "movie_id", path=path, expected="an integer movie_id")
    keep = ~pd.Series(ids).duplicated(keep="first").to_numpy()   # documented: first row per movie_id
    df, ids = df.loc[keep].reset_index(drop=True), ids[keep]
    flags = {g: int_column(df, g, path=path, expected="a genre flag 0 or 1") for g in GENRES}
    for g, v in flags.items():
        bad = np.flatnonzero((v != 0) & (v != 1))
        if len(bad):
            raise DataError(f"{path}: movie_id {ids[bad[0]]}, column {g!r}: got {v[bad[0]]}; expected 0 or 1")
    title = text_column(df, "title")
    overview = text_column(df, "overview")
    text = [f"{t}. {o}" if o else t for t, o in zip(title, overview)]
    flag_matrix = np.stack([flags[g] for g in GENRES], axis=1)          # (I, 19)
    first = np.where(flag_matrix.any(axis=1), flag_matrix.argmax(axis=1), 0)
    items = pd.DataFrame({
        "item_id": ids, "title": title.to_numpy(), "text": text,
    })
    items["image_path"] = pd.Series([str(posters / f"{i}.jpg") if (posters / f"{i}.jpg").is_file() else None
                                     for i in ids], dtype=object)
    for g in GENRES:
        items[g] = flags[g].astype(np.int8)
    items["genre"] = [GENRES[k].removeprefix("genre_") for k in first]   # primary genre, for plot colours
    for c in NUMERIC_FIELDS:
        if c in df.columns:
            items[c] = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
    for c in CATEGORICAL_FIELDS:
        if c in df.columns:
            items[c] = pd.Series([v if isinstance(v, str) and v else None for v in df[c]], dtype=object).to_numpy()
    return items


def _users(path: Path) -> pd.DataFrame:
    df = read_table(path, sep="|", names=["user_id", "age", "gender", "occupation", "zip"], dtype=str)
    users = pd.DataFrame({"user_id": int_column(df, "user_id", path=path, expected="an integer user id"),
                          "age": int_column(df, "age", path=path, expected="an integer age")})
    for c in ("gender", "occupation", "zip"):
        users[c] = text_column(df, c).to_numpy()
    return users


def load_movielens(data_dir: str | Path) -> RawDataset:
    """Load MovieLens-100K from its directory; every malformed file or row raises DataError."""
    root = require_dir(data_dir, what="MovieLens-100K directory")
    ratings_path, users_path = root / "ml-100k" / "u.data", root / "ml-100k" / "u.user"
    items_path, posters = root / "items.csv", root / "posters"
    items = _items(items_path, posters)
    raw = read_table(ratings_path, sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    interactions = interactions_frame(raw, path=ratings_path, known_items=items["item_id"].to_numpy(),
                                      items_path=items_path)
    users = _users(users_path) if users_path.is_file() else None
    if users is not None:
        require_known(interactions["user_id"].to_numpy(), users["user_id"].to_numpy(),
                      path=ratings_path, column="user_id", known_in=str(users_path))
    files = [p for p in (items_path, ratings_path, users_path) if p.is_file()]
    return RawDataset(
        name="movielens-100k", items=items, interactions=interactions, users=users,
        attribute_columns=(*GENRES, "genre"),
        load_image=FolderImages(dict(zip(items["item_id"].tolist(), items["image_path"].tolist()))),
        fingerprint=_fingerprint(files, posters), image_size=POSTER_SIZE,
        user_feature_columns=USER_FEATURES if users is not None else (),
        item_fields=tuple(c for c in (*NUMERIC_FIELDS, *CATEGORICAL_FIELDS) if c in items.columns),
    )
