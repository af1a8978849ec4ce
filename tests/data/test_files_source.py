"""The files source (a user's own Parquet/CSV + images) and every bad-input case, each named in its message."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from em3.config import DataConfig
from em3.data.files import load_files
from em3.data.images import image_coverage
from em3.data.samples import build_samples
from em3.errors import DataError
from tests.data.conftest import write_files_dataset


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_loads_both_formats(tmp_path: Path, fmt: str):
    raw = load_files(write_files_dataset(tmp_path / fmt, fmt=fmt))
    assert raw.items["item_id"].tolist() == [10, 11, 12, 13, 14]
    assert raw.attribute_columns == ("colour",)
    assert len(raw.interactions) == 15 and set(raw.interactions.columns) >= {"user_id", "item_id", "timestamp", "rating"}
    assert raw.users is not None and raw.users["age"].tolist() == [30, 30, 30]
    assert raw.load_image(10).size == (40, 30) and raw.load_image(11) is None   # no image_path: masked
    cov = image_coverage(raw)
    assert (cov.readable, cov.missing, cov.unreadable) == (3, 2, 0)
    s = build_samples(raw, DataConfig(source="files", data_dir=str(tmp_path), cold_item_frac=0.2))
    assert s.num_items == 5 and len(s.cold_items) == 1 and len(s.label) == 15


def test_labels_instead_of_ratings(files_dataset: Path):
    inter = pd.read_csv(files_dataset / "interactions.csv")
    inter.drop(columns="rating").assign(label=(inter["rating"] >= 3).astype(int)).to_csv(
        files_dataset / "interactions.csv", index=False)
    raw = load_files(files_dataset)
    assert "rating" not in raw.interactions and set(raw.interactions["label"].unique()) <= {0.0, 1.0}


def _rewrite(root: Path, name: str, change) -> None:
    df = pd.read_csv(root / f"{name}.csv", keep_default_na=False, dtype=str)
    change(df).to_csv(root / f"{name}.csv", index=False)


@pytest.mark.parametrize("name, change, match", [
    ("items", lambda d: d.drop(columns="title"), r"items\.csv: missing column\(s\) title"),
    ("items", lambda d: d.assign(item_id=["10", "11", "12", "11", "14"]),
     r"items\.csv: duplicate item_id 11 \(rows 2 and 4\)"),
    ("items", lambda d: d.assign(item_id=["10", "11", "", "13", "14"]),
     r"items\.csv: row 3, column 'item_id': got an empty value; expected an integer item id"),
    ("interactions", lambda d: d.rename(columns={"user_id": "uid"}), r"interactions\.csv: missing column\(s\) user_id"),
    ("interactions", lambda d: d.drop(columns="rating"), r"interactions\.csv: needs a 'rating' or a 'label' column"),
    ("interactions", lambda d: d.assign(rating=d["rating"].where(d.index != 4, "n/a")),
     r"interactions\.csv: row 5, column 'rating': got 'n/a'; expected a numeric rating"),
    ("interactions", lambda d: d.assign(timestamp=d["timestamp"].where(d.index != 2, "")),
     r"interactions\.csv: row 3, column 'timestamp': got an empty value; expected a unix time"),
    ("interactions", lambda d: d.assign(item_id=d["item_id"].where(d.index != 6, "77")),
     r"interactions\.csv: row 7, column 'item_id': unknown item_id 77; expected one listed in .*items\.csv"),
    ("interactions", lambda d: d.assign(user_id=d["user_id"].where(d.index != 0, "9")),
     r"interactions\.csv: row 1, column 'user_id': unknown user_id 9; expected one listed in .*users\.csv"),
    ("interactions", lambda d: d.drop(columns="rating").assign(label="2"),
     r"interactions\.csv: row 1, column 'label': got 2; expected a label 0 or 1"),
    ("users", lambda d: pd.concat([d, d.iloc[:1]]), r"users\.csv: duplicate user_id 1 \(rows 1 and 4\)"),
])
def test_bad_tables_name_file_row_and_field(files_dataset: Path, name: str, change, match: str):
    _rewrite(files_dataset, name, change)
    with pytest.raises(DataError, match=match):
        load_files(files_dataset)


def test_empty_and_header_only_files(files_dataset: Path):
    (files_dataset / "interactions.csv").write_text("")
    with pytest.raises(DataError, match=r"interactions\.csv: the file is empty"):
        load_files(files_dataset)
    (files_dataset / "interactions.csv").write_text("user_id,item_id,timestamp,rating\n")
    with pytest.raises(DataError, match=r"interactions\.csv: the file has no data rows"):
        load_files(files_dataset)


def test_corrupt_parquet_and_missing_tables(files_dataset: Path, tmp_path: Path):
    (files_dataset / "items.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match=r"items\.parquet: cannot"):
        load_files(files_dataset)
    (files_dataset / "items.parquet").unlink()
    (files_dataset / "interactions.csv").unlink()
    with pytest.raises(DataError, match=r"missing interactions\.parquet or interactions\.csv"):
        load_files(files_dataset)
    with pytest.raises(DataError, match=r"dataset directory .*absent does not exist"):
        load_files(tmp_path / "absent")


def test_unreadable_images_are_masked_counted_not_errors(files_dataset: Path):
    good = (files_dataset / "images" / "0.png").read_bytes()
    (files_dataset / "images" / "0.png").write_bytes(good[: len(good) // 2])    # truncated
    (files_dataset / "images" / "2.png").write_bytes(b"\x89PNG broken")
    (files_dataset / "images" / "4.png").unlink()                                # listed but absent
    raw = load_files(files_dataset)
    assert [raw.load_image(i) for i in (10, 12, 14)] == [None, None, None]
    cov = image_coverage(raw)
    assert (cov.readable, cov.missing, cov.unreadable) == (0, 3, 2)
    assert raw.load_image.unreadable.keys() == {10, 12}
    assert np.isfinite(build_samples(raw, DataConfig(cold_item_frac=0.0)).label).all()   # the run goes on
