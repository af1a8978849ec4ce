"""Small on-disk datasets for the loader tests: a fake MovieLens layout and a files-source folder."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from em3.data.movielens import GENRES


def write_movielens(root: Path, *, n_items: int = 6, n_users: int = 3, poster_missing: tuple[int, ...] = (6,)) -> Path:
    """A MovieLens-100K-shaped folder: items.csv (movie 2 twice), ml-100k/u.data, u.user, posters/."""
    (root / "ml-100k").mkdir(parents=True)
    (root / "posters").mkdir()
    rows = []
    for m in range(1, n_items + 1):
        flags = {g: int(g == GENRES[1 + m % 5]) for g in GENRES}
        rows.append({"movie_id": m, "title": f"Movie {m} (1995)", **flags, "year": 1995,
                     "overview": f"plot of movie {m}", "original_language": "fr" if m == 3 else "en",
                     "runtime": 90.0 + m if m != 4 else None, "vote_average": 6.5, "vote_count": 10.0 * m})
        if m == 2:   # MovieLens' items.csv lists some ids twice: the first row wins
            rows.append({"movie_id": m, "title": "DUPLICATE", **flags, "year": 1995, "overview": "dup"})
    pd.DataFrame(rows).to_csv(root / "items.csv", index=False)
    lines = [f"{u}\t{m}\t{1 + (u * m) % 5}\t{880000000 + 100 * m + u}"
             for u in range(1, n_users + 1) for m in range(1, n_items + 1)]
    (root / "ml-100k" / "u.data").write_text("\n".join(lines) + "\n")
    (root / "ml-100k" / "u.user").write_text("".join(f"{u}|{20 + u}|M|writer|1000{u}\n" for u in range(1, n_users + 1)))
    for m in range(1, n_items + 1):
        if m not in poster_missing:
            Image.new("RGB", (92, 138), (10 * m, 50, 90)).save(root / "posters" / f"{m}.jpg")
    return root


def write_files_dataset(root: Path, *, fmt: str = "csv", n_items: int = 5, n_users: int = 3) -> Path:
    """A files-source folder: items (with a colour attribute), interactions, users, images/."""
    (root / "images").mkdir(parents=True)
    items = pd.DataFrame({"item_id": range(10, 10 + n_items), "title": [f"thing {k}" for k in range(n_items)],
                          "text": [f"a thing number {k}" for k in range(n_items)],
                          "image_path": [f"{k}.png" if k % 2 == 0 else "" for k in range(n_items)],
                          "colour": ["red", "blue", "red", "green", "blue"][:n_items]})
    inter = pd.DataFrame([{"user_id": u, "item_id": 10 + k, "timestamp": 1000 + 10 * k + u, "rating": 1 + (u + k) % 5}
                          for u in range(1, n_users + 1) for k in range(n_items)])
    users = pd.DataFrame({"user_id": range(1, n_users + 1), "age": [30] * n_users})
    for k in range(0, n_items, 2):
        Image.new("RGB", (40, 30), (200, 10 * k, 0)).save(root / "images" / f"{k}.png")
    for name, df in (("items", items), ("interactions", inter), ("users", users)):
        if fmt == "parquet":
            df.to_parquet(root / f"{name}.parquet", index=False)
        else:
            df.to_csv(root / f"{name}.csv", index=False)
    return root


@pytest.fixture
def fake_movielens(tmp_path: Path) -> Path:
    return write_movielens(tmp_path / "ml")


@pytest.fixture
def files_dataset(tmp_path: Path) -> Path:
    return write_files_dataset(tmp_path / "mine")
