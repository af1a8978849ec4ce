"""The MovieLens-100K loader: the real shared copy (when present) and bad input on a small fake layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from em3.config import DataConfig
from em3.data.images import image_coverage
from em3.data.movielens import GENRES, load_movielens
from em3.data.samples import build_samples
from em3.errors import DataError


def test_fake_layout_loads(fake_movielens: Path):
    raw = load_movielens(fake_movielens)
    assert raw.name == "movielens-100k" and raw.image_size == (138, 92)
    assert raw.items["item_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert raw.items.loc[raw.items["item_id"] == 2, "title"].item() == "Movie 2 (1995)"   # first row kept
    assert raw.items["text"].iloc[0] == "Movie 1 (1995). plot of movie 1"
    assert set(GENRES) <= set(raw.attribute_columns) and "genre" in raw.attribute_columns
    assert len(raw.interactions) == 18 and raw.interactions["rating"].dtype == np.float64
    assert raw.users["user_id"].tolist() == [1, 2, 3] and raw.users["occupation"].iloc[0] == "writer"
    assert raw.load_image(1).size == (92, 138) and raw.load_image(1).mode == "RGB"
    assert raw.load_image(6) is None
    cov = image_coverage(raw)
    assert (cov.readable, cov.missing, cov.unreadable) == (5, 1, 0)
    # the tabular modality's fields: numeric as float (a missing runtime NaN), the language as text
    assert raw.item_fields == ("year", "runtime", "vote_count", "vote_average", "original_language")
    by_id = raw.items.set_index("item_id")
    assert by_id.loc[3, "original_language"] == "fr" and np.isnan(by_id.loc[4, "runtime"])
    assert by_id.loc[2, "vote_count"] == 20.0 and not set(raw.item_fields) & set(raw.attribute_columns)


def test_fingerprint_follows_the_files(fake_movielens: Path):
    before = load_movielens(fake_movielens).fingerprint
    assert load_movielens(fake_movielens).fingerprint == before
    (fake_movielens / "posters" / "1.jpg").unlink()
    assert load_movielens(fake_movielens).fingerprint != before


def test_truncated_and_corrupt_posters_are_masked_and_counted(fake_movielens: Path):
    p1 = fake_movielens / "posters" / "1.jpg"
    p1.write_bytes(p1.read_bytes()[: len(p1.read_bytes()) // 2])      # truncated JPEG
    (fake_movielens / "posters" / "2.jpg").write_bytes(b"not an image at all")
    raw = load_movielens(fake_movielens)
    assert raw.load_image(1) is None and raw.load_image(2) is None and raw.load_image(3) is not None
    cov = image_coverage(raw)
    assert (cov.readable, cov.missing, cov.unreadable) == (3, 1, 2)
    assert any("1.jpg" in e for e in cov.examples)


def _edit_udata(root: Path, row: int, new: str) -> None:
    path = root / "ml-100k" / "u.data"
    lines = path.read_text().splitlines()
    lines[row - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("line, match", [
    ("1\t2\tfive\t880000000", r"u\.data: row 4, column 'rating': got 'five'; expected a numeric rating"),
    ("1\t2\t3\t", r"u\.data: row 4, column 'timestamp': got an empty value; expected a unix time"),
    ("1\t99\t3\t880000000", r"u\.data: row 4, column 'item_id': unknown item_id 99; expected one listed in .*items\.csv"),
    ("x\t2\t3\t880000000", r"u\.data: row 4, column 'user_id': got 'x'"),
    ("7\t2\t3\t880000000", r"u\.data: row 4, column 'user_id': unknown user_id 7; expected one listed in .*u\.user"),
])
def test_bad_ratings_rows_name_file_row_and_field(fake_movielens: Path, line: str, match: str):
    _edit_udata(fake_movielens, 4, line)
    with pytest.raises(DataError, match=match):
        load_movielens(fake_movielens)


def test_bad_items_csv(fake_movielens: Path):
    items = pd.read_csv(fake_movielens / "items.csv")
    items.drop(columns=["overview"]).to_csv(fake_movielens / "items.csv", index=False)
    with pytest.raises(DataError, match=r"items\.csv: missing column\(s\) overview"):
        load_movielens(fake_movielens)
    items.assign(movie_id=items["movie_id"].astype(str).replace("3", "three")).to_csv(fake_movielens / "items.csv", index=False)
    with pytest.raises(DataError, match=r"items\.csv: row 4, column 'movie_id': got 'three'"):
        load_movielens(fake_movielens)
    (fake_movielens / "items.csv").write_text("")
    with pytest.raises(DataError, match=r"items\.csv: the file is empty"):
        load_movielens(fake_movielens)


def test_missing_files_and_directory(fake_movielens: Path, tmp_path: Path):
    with pytest.raises(DataError, match=r"MovieLens-100K directory .*nowhere does not exist"):
        load_movielens(tmp_path / "nowhere")
    (fake_movielens / "ml-100k" / "u.data").write_text("")
    with pytest.raises(DataError, match=r"u\.data: the file is empty"):
        load_movielens(fake_movielens)
    (fake_movielens / "ml-100k" / "u.data").unlink()
    with pytest.raises(DataError, match=r"u\.data: file not found"):
        load_movielens(fake_movielens)


@pytest.mark.shared
def test_real_movielens(movielens_dir: Path):
    raw = load_movielens(movielens_dir)
    assert len(raw.items) == 1682 and raw.items["item_id"].is_unique
    assert len(raw.interactions) == 100_000 and raw.interactions["user_id"].nunique() == 943
    assert raw.items["image_path"].isna().sum() == 19
    assert raw.items.loc[raw.items["item_id"] == 1, "title"].item() == "Toy Story (1995)"
    assert raw.item_fields == ("year", "runtime", "vote_count", "vote_average", "original_language")
    assert raw.items["original_language"].value_counts().index[0] == "en" and raw.items["runtime"].notna().mean() > 0.95
    s = build_samples(raw, DataConfig(max_history=50))
    assert abs(s.label.mean() - 0.554) < 0.001
    assert {k: len(v) for k, v in s.splits.items()} == {"train": 71784, "val": 9008, "test": 9049, "test_cold": 10159}
    # no leakage on the real data: every history entry of a val/test sample was rated strictly earlier
    when = dict(zip(zip(s.user.tolist(), s.item.tolist()), s.timestamp.tolist()))
    rows = np.concatenate([s.splits["val"], s.splits["test"], s.splits["test_cold"]])
    for r in rows[::7]:
        h = s.history[r][s.history[r] != 0]
        assert all(when[(s.user[r], it)] < s.timestamp[r] for it in h.tolist())


def test_item_fields_choose_the_tabular_columns(fake_movielens: Path):
    from em3.data.load import load_dataset
    cfg = DataConfig(source="movielens-100k", data_dir=str(fake_movielens), item_fields=("year", "runtime"))
    assert load_dataset(cfg).item_fields == ("year", "runtime")
    assert load_dataset(DataConfig(source="movielens-100k", data_dir=str(fake_movielens))).item_fields[-1] == \
        "original_language"                                                      # 'auto': the source's own
    with pytest.raises(DataError, match=r"data.item_fields: \['budget'\]"):
        load_dataset(DataConfig(source="movielens-100k", data_dir=str(fake_movielens), item_fields=("budget",)))
    with pytest.raises(ValueError, match="data.item_fields"):
        DataConfig(item_fields=("auto", "year"))
