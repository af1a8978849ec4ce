"""Reading and checking the tabular files of a dataset, failing with a DataError that names the file, row and field.

Rows are reported as 1-based *data* rows (the first row after a CSV header is row 1),
so a user can find them in a spreadsheet or with `sed -n`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from em3.errors import DataError

MAX_EXACT_INT = 2**53   # largest integer a float64 (the parse path of every id column) holds exactly


def _shown(value: object) -> str:
    if hasattr(value, "item"):          # numpy scalar -> plain Python value
        value = value.item()
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def require_dir(path: str | Path, *, what: str) -> Path:
    """The directory, or a DataError saying which one is missing."""
    p = Path(path)
    if not p.is_dir():
        state = "is not a directory" if p.exists() else "does not exist"
        raise DataError(f"{what} {p} {state}")
    return p


def find_table(directory: Path, stem: str, *, required: bool = True) -> Path | None:
    """`<stem>.parquet` or `<stem>.csv` in directory (Parquet wins), else DataError / None."""
    for ext in (".parquet", ".csv"):
        p = directory / f"{stem}{ext}"
        if p.is_file():
            return p
    if required:
        raise DataError(f"{directory}: missing {stem}.parquet or {stem}.csv")
    return None


def read_table(path: Path, *, sep: str = ",", names: list[str] | None = None,
               dtype: object = None) -> pd.DataFrame:
    """Read a CSV/TSV (or Parquet) file; missing, empty or unparsable files raise DataError."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; expected a header and data rows")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep=sep, header=None if names else "infer", names=names,
                             dtype=dtype, encoding_errors="replace", skipinitialspace=True,
                             keep_default_na=False, na_values=[""])   # "NA" in a title stays text
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected a header and data rows") from None
    except (pd.errors.ParserError, ValueError, OSError, UnicodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot parse the file ({first})") from None
    except Exception as e:  # pyarrow raises its own types for corrupt Parquet
        raise DataError(f"{path}: cannot read the file ({type(e).__name__}: {e})") from None
    if len(df) == 0:
        raise DataError(f"{path}: the file has no data rows")
    return df


def require_columns(df: pd.DataFrame, columns: Iterable[str], *, path: Path) -> None:
    """Every named column is present, else DataError listing the missing and the found ones."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns[:12])) + (", ..." if len(df.columns) > 12 else "")
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found columns: {found}")


def _numeric(df: pd.DataFrame, column: str, *, path: Path, expected: str) -> np.ndarray:
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        value = raw.iloc[row]
        what = "an empty value" if pd.isna(value) else f"{_shown(value)}"
        more = f" ({len(bad)} bad rows in all)" if len(bad) > 1 else ""
        raise DataError(f"{path}: row {row + 1}, column {column!r}: got {what}; expected {expected}{more}")
    return values


def int_column(df: pd.DataFrame, column: str, *, path: Path, expected: str = "an integer") -> np.ndarray:
    """The column as int64; NaN, text or fractional values raise DataError naming the row."""
    values = _numeric(df, column, path=path, expected=expected)
    frac = np.flatnonzero(values != np.round(values))
    if len(frac):
        row = int(frac[0])
        raise DataError(f"{path}: row {row + 1}, column {column!r}: got {_shown(df[column].iloc[row])}; "
                        f"expected {expected}")
    # float64 holds integers exactly only up to 2**53; beyond, ids would merge or wrap to INT64_MIN
    huge = np.flatnonzero(np.abs(values) >= MAX_EXACT_INT)
    if len(huge):
        row = int(huge[0])
        raise DataError(f"{path}: row {row + 1}, column {column!r}: got {_shown(df[column].iloc[row])}; "
                        f"expected {expected} below 2**53 in magnitude")
    return values.astype(np.int64)


def float_column(df: pd.DataFrame, column: str, *, path: Path, expected: str = "a number") -> np.ndarray:
    """The column as float64; NaN or text raises DataError naming the row."""
    return _numeric(df, column, path=path, expected=expected)


def label_column(df: pd.DataFrame, column: str, *, path: Path) -> np.ndarray:
    """A 0/1 label column as float32."""
    values = _numeric(df, column, path=path, expected="a label 0 or 1")
    bad = np.flatnonzero((values != 0) & (values != 1))
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{path}: row {row + 1}, column {column!r}: got {_shown(df[column].iloc[row])}; "
                        f"expected a label 0 or 1")
    return values.astype(np.float32)


def require_unique(ids: np.ndarray, *, path: Path, column: str) -> None:
    """No id appears twice, else DataError naming the id and both rows."""
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup_value = ids[first[np.flatnonzero(counts > 1)[0]]]
        rows = np.flatnonzero(ids == dup_value)[:2] + 1
        raise DataError(f"{path}: duplicate {column} {dup_value} (rows {rows[0]} and {rows[1]}); "
                        f"expected each {column} once")


def require_known(ids: np.ndarray, known: np.ndarray, *, path: Path | str, column: str, known_in: str) -> None:
    """Every id is in `known`, else DataError naming the first unknown id and its row."""
    bad = np.flatnonzero(~np.isin(ids, known))
    if len(bad):
        row = int(bad[0])
        more = f" ({len(bad)} rows in all)" if len(bad) > 1 else ""
        raise DataError(f"{path}: row {row + 1}, column {column!r}: unknown {column} {ids[row]}; "
                        f"expected one listed in {known_in}{more}")


def text_column(df: pd.DataFrame, column: str) -> pd.Series:
    """A text column with missing values as empty strings."""
    return df[column].astype("string").fillna("").astype(object)


def interactions_frame(df: pd.DataFrame, *, path: Path, known_items: np.ndarray, items_path: Path | str) -> pd.DataFrame:
    """Check an interactions table (user_id, item_id, timestamp, rating and/or label) into the schema."""
    require_columns(df, ("user_id", "item_id", "timestamp"), path=path)
    if "rating" not in df.columns and "label" not in df.columns:
        found = ", ".join(map(str, df.columns))
        raise DataError(f"{path}: needs a 'rating' or a 'label' column; found columns: {found}")
    out = pd.DataFrame({
        "user_id": int_column(df, "user_id", path=path, expected="an integer user id"),
        "item_id": int_column(df, "item_id", path=path, expected="an integer item id"),
        "timestamp": int_column(df, "timestamp", path=path, expected="a unix time in seconds (integer)"),
    })
    if "rating" in df.columns:
        out["rating"] = float_column(df, "rating", path=path, expected="a numeric rating")
    if "label" in df.columns:
        out["label"] = label_column(df, "label", path=path)
    require_known(out["item_id"].to_numpy(), known_items, path=path, column="item_id", known_in=str(items_path))
    return out
