"""Fuzz the dataset loaders: any bytes in any table file give a RawDataset + SampleSet or a DataError, nothing else.

Each example writes a valid dataset into a fresh temp dir, replaces ONE of its files with fuzzed
content (random bytes, another encoding, huge or negative values, missing columns, empty
files), then loads it and builds samples. Checked: only the project's documented errors escape,
the input files are unchanged, and nothing is written anywhere.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from em3.config import DataConfig
from em3.data.files import load_files
from em3.data.movielens import GENRES, load_movielens
from em3.data.samples import build_samples
from em3.errors import EM3Error
from tests.reliability.fs_audit import FsAudit

pytestmark = pytest.mark.reliability
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- valid datasets ---------------------------------------------------------------------------

FILES_COLUMNS = {
    "items": ["item_id", "title", "text", "image_path", "colour"],
    "interactions": ["user_id", "item_id", "timestamp", "rating", "label"],
    "users": ["user_id", "age"],
}
ML_COLUMNS = {"items.csv": ["movie_id", "title", "overview", "year", *GENRES],
              "ml-100k/u.data": ["user_id", "item_id", "rating", "timestamp"],
              "ml-100k/u.user": ["user_id", "age", "gender", "occupation", "zip"]}


def _files_tables(n_items: int = 6, n_users: int = 4) -> dict[str, pd.DataFrame]:
    items = pd.DataFrame({"item_id": range(10, 10 + n_items), "title": [f"t{k}" for k in range(n_items)],
                          "text": [f"text {k}" for k in range(n_items)],
                          "image_path": [f"{k}.png" for k in range(n_items)], "colour": ["red", "blue"] * (n_items // 2)})
    inter = pd.DataFrame([{"user_id": u, "item_id": 10 + k, "timestamp": 1000 + 10 * k + u, "rating": 1 + (u + k) % 5,
                           "label": int((u + k) % 2)} for u in range(1, n_users + 1) for k in range(n_items)])
    users = pd.DataFrame({"user_id": range(1, n_users + 1), "age": [30] * n_users})
    return {"items": items, "interactions": inter, "users": users}


def write_files(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    for name, df in _files_tables().items():
        df.to_csv(root / f"{name}.csv", index=False)


def write_movielens(root: Path, n_items: int = 6, n_users: int = 4) -> None:
    (root / "ml-100k").mkdir(parents=True)
    (root / "posters").mkdir()
    pd.DataFrame([{"movie_id": m, "title": f"M{m}", "overview": f"plot {m}", "year": 1995,
                   **{g: int(g == GENRES[1 + m % 5]) for g in GENRES}} for m in range(1, n_items + 1)]
                 ).to_csv(root / "items.csv", index=False)
    (root / "ml-100k" / "u.data").write_text("".join(f"{u}\t{m}\t{1 + (u * m) % 5}\t{880000000 + 100 * m + u}\n"
                                                     for u in range(1, n_users + 1) for m in range(1, n_items + 1)))
    (root / "ml-100k" / "u.user").write_text("".join(f"{u}|{20 + u}|M|writer|1000{u}\n" for u in range(1, n_users + 1)))


# ---- fuzzed file contents ---------------------------------------------------------------------

HUGE = st.sampled_from([2**63, -(2**63) - 1, 2**70, 10**30, 1e308, -1e308, float("inf"), float("nan"), 2**53 + 1])
CELL = st.one_of(st.integers(-5, 50), st.integers(-(2**40), 2**40), HUGE,
                 st.floats(allow_nan=True, allow_infinity=True, width=32),
                 st.text(max_size=8), st.sampled_from(["", "NA", "nan", "1e999", "-0", "０", "١", "0x10", "1,5"]))
ENCODINGS = st.sampled_from(["utf-8", "utf-16", "latin-1", "cp1252", "utf-8-sig", "shift_jis"])


@st.composite
def table_text(draw, columns: list[str], sep: str, header: bool) -> bytes:
    """A table with some columns dropped/renamed/added, fuzzed cells, in some encoding."""
    cols = draw(st.lists(st.sampled_from(columns + ["extra", " item_id", "ITEM_ID"]), min_size=0,
                         max_size=len(columns) + 2, unique=True))
    if draw(st.booleans()):
        cols = list(columns)                     # all the right columns: fuzz only the values
    n_rows = draw(st.integers(0, 8))
    rows = [[draw(st.one_of(st.integers(1, 6), st.integers(10, 15), CELL)) for _ in cols] for _ in range(n_rows)]
    lines = ([sep.join(cols)] if header else []) + [sep.join(str(v) for v in r) for r in rows]
    if draw(st.booleans()):                      # ragged rows
        lines.append(sep.join(["1"] * draw(st.integers(0, len(cols) + 3))))
    text = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n", "\n\n\n"]))
    return text.encode(draw(ENCODINGS), errors="replace")


def file_content(columns: list[str], *, sep: str = ",", header: bool = True) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=400),                                         # random bytes
        st.just(b""), st.just(b"\n"), st.just(",".join(columns).encode()),   # empty, blank, header only
        st.just(b"PAR1\x00\x00PAR1"),                                    # a fake Parquet magic
        table_text(columns, sep, header),
    )


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _load_and_check(load, root: Path, cfg: DataConfig) -> str:
    """Load + build samples under the audit; returns 'ok' or 'refused'; fails on anything else."""
    before = _digest(root)
    with FsAudit() as audit:
        try:
            raw = load(root)
            samples = build_samples(raw, cfg)
            outcome = "ok"
        except EM3Error as e:
            assert str(e).strip(), "an empty error message"
            outcome = "refused"
    assert audit.writes == [], f"the loader wrote {audit.writes[:3]}"
    assert _digest(root) == before, "the input files changed"
    if outcome == "ok":   # a dataset that loads is internally consistent
        ids = raw.items["item_id"].to_numpy()
        assert len(np.unique(ids)) == len(ids) and ids.dtype == np.int64
        assert np.isin(raw.interactions["item_id"], ids).all()
        assert samples.num_items == len(samples.item_ids)
        n = len(samples.user)
        assert sorted(np.concatenate(list(samples.splits.values())).tolist()) == list(range(n))
        assert (samples.item >= 1).all() and (samples.item <= samples.num_items).all()
    return outcome


@FUZZ
@given(target=st.sampled_from(sorted(FILES_COLUMNS)), data=st.data())
def test_files_loader_survives_any_table(target: str, data: st.DataObject):
    content = data.draw(file_content(FILES_COLUMNS[target]))
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "ds"
        write_files(root)
        (root / f"{target}.csv").write_bytes(content)
        _load_and_check(load_files, root, DataConfig(source="files", data_dir=str(root)))


@FUZZ
@given(target=st.sampled_from(sorted(ML_COLUMNS)), data=st.data())
def test_movielens_loader_survives_any_table(target: str, data: st.DataObject):
    sep = {"items.csv": ",", "ml-100k/u.data": "\t", "ml-100k/u.user": "|"}[target]
    content = data.draw(file_content(ML_COLUMNS[target], sep=sep, header=target == "items.csv"))
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "ml"
        write_movielens(root)
        (root / target).write_bytes(content)
        _load_and_check(load_movielens, root, DataConfig(source="movielens-100k", data_dir=str(root)))


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=300), target=st.sampled_from(["items", "interactions", "users"]))
def test_a_corrupt_parquet_file_is_a_data_error(data: bytes, target: str):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "ds"
        write_files(root)
        (root / f"{target}.parquet").write_bytes(b"PAR1" + data)   # Parquet wins over the CSV next to it
        assert _load_and_check(load_files, root, DataConfig(source="files", data_dir=str(root))) == "refused"


@pytest.mark.parametrize("value,column", [(2**70, "item_id"), (-(2**63) - 5, "user_id"), (1e300, "timestamp"),
                                          (2**53 + 1, "item_id")])
def test_ids_beyond_int64_precision_are_refused_not_wrapped(tmp_path: Path, value, column: str):
    """Huge ids used to wrap silently to INT64_MIN (or lose precision): refused naming the row and column."""
    root = tmp_path / "ds"
    write_files(root)
    tables = _files_tables()
    inter = tables["interactions"].astype(object)
    inter.loc[2, column] = value
    if column == "item_id":
        items = tables["items"].astype(object)
        items.loc[0, "item_id"] = value
        items.to_csv(root / "items.csv", index=False)
    inter.to_csv(root / "interactions.csv", index=False)
    with pytest.raises(EM3Error, match=rf"row \d+, column '{column}'"):
        load_files(root)


def test_negative_and_zero_ids_load_and_index_correctly(tmp_path: Path):
    """Negative and zero ids are legal ids (not padding): every item keeps its own index."""
    root = tmp_path / "ds"
    write_files(root)
    t = _files_tables()
    new_ids = {10: -3, 11: 0, 12: -(2**40)}
    t["items"]["item_id"] = t["items"]["item_id"].replace(new_ids)
    t["interactions"]["item_id"] = t["interactions"]["item_id"].replace(new_ids)
    t["interactions"]["user_id"] = -t["interactions"]["user_id"]
    t["users"]["user_id"] = -t["users"]["user_id"]
    for name, df in t.items():
        df.to_csv(root / f"{name}.csv", index=False)
    raw = load_files(root)
    samples = build_samples(raw, DataConfig(source="files", data_dir=str(root), cold_item_frac=0.0))
    assert sorted(samples.item_ids.tolist()) == sorted(t["items"]["item_id"].tolist())
    assert len(samples.user) == len(t["interactions"])
    assert samples.item.min() >= 1   # no real item lands on the padding row


@pytest.mark.parametrize("bad", ["../../secret.png", "{secret}", "/etc/hostname", "sub/../../secret.png",
                                 "link.png", "a\x00b.png"])
def test_image_paths_outside_the_dataset_are_refused_and_never_read(tmp_path: Path, bad: str):
    """image_path '../secret.png', an absolute path or a symlink out of images/ is refused naming the row; the
    file outside is never opened. Paths inside images/ still load."""
    from PIL import Image

    root = tmp_path / "ds"
    write_files(root)
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    (root / "images" / "link.png").symlink_to(secret)
    Image.new("RGB", (8, 8)).save(root / "images" / "ok.png")
    items = _files_tables()["items"]
    items["image_path"] = ["ok.png", "", bad.format(secret=secret), "ok.png", "", ""]
    items.to_csv(root / "items.csv", index=False)
    with FsAudit() as audit:
        with pytest.raises(EM3Error, match=r"row 3, column 'image_path'"):
            load_files(root)
    assert audit.reads_outside(root) == []
    items["image_path"] = ["ok.png", "", "./sub/../ok.png", "", "", ""]
    items.to_csv(root / "items.csv", index=False)
    raw = load_files(root)
    with FsAudit() as audit:
        loaded = [raw.load_image(int(i)) is not None for i in raw.items["item_id"]]
    assert loaded == [True, False, True, False, False, False]
    assert audit.reads_outside(root) == []
