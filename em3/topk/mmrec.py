"""Loader of the MMRec / EM3 public dataset format (Amazon Baby, Sports, ... as the authors ship them).

A dataset directory holds `<name>.inter` (tab-separated, header `userID itemID rating
timestamp x_label`, IDs already 0-based, `x_label` 0 = train, 1 = validation, 2 = test),
`image_feat.npy` (I, 4096) and `text_feat.npy` (I, 384), row i = itemID i.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from em3.errors import DataError
from em3.topk.data import SPLITS, TopKData, pair_matrix

INTER_COLUMNS = ("userID", "itemID", "x_label")
FEATURE_FILES = {"image_feat": "image_feat.npy", "text_feat": "text_feat.npy"}


def _inter_file(directory: Path, name: str | None) -> Path:
    if name is not None:
        path = directory / f"{name}.inter"
        if not path.is_file():
            raise DataError(f"{path}: interaction file not found")
        return path
    found = sorted(directory.glob("*.inter"))
    if len(found) != 1:
        raise DataError(f"{directory}: expected exactly one <name>.inter file, found {len(found)}"
                        f"{' (' + ', '.join(p.name for p in found) + ')' if found else ''}; pass name=")
    return found[0]


def _features(directory: Path) -> dict[str, np.ndarray | None]:
    out: dict[str, np.ndarray | None] = {}
    for key, fname in FEATURE_FILES.items():
        path = directory / fname
        if not path.is_file():
            out[key] = None
            continue
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: not a readable .npy array ({e})") from None
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise DataError(f"{path}: expected a 2-D numeric array (items, features), got shape {arr.shape} {arr.dtype}")
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: contains NaN or infinite values")
        out[key] = arr.astype(np.float32)
    if out["image_feat"] is None and out["text_feat"] is None:
        raise DataError(f"{directory}: neither image_feat.npy nor text_feat.npy found")
    return out


def load_mmrec(directory: str | Path, *, name: str | None = None) -> TopKData:
    """Read an MMRec-format dataset directory into TopKData (item i = itemID i = feature row i)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: MMRec dataset directory not found")
    path = _inter_file(directory, name)
    try:
        df = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: cannot parse as a tab-separated table ({e})") from None
    missing = [c for c in INTER_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(map(str, df.columns))})")
    for col in INTER_COLUMNS:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() | (values < 0) | (values != values.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: row {row + 2}, column {col}: expected a non-negative integer, got {df[col].iloc[row]!r}")
        df[col] = values.astype(np.int64)
    bad_split = ~df["x_label"].isin((0, 1, 2))
    if bad_split.any():
        row = int(np.flatnonzero(bad_split.to_numpy())[0])
        raise DataError(f"{path}: row {row + 2}, column x_label: expected 0 (train), 1 (valid) or 2 (test), "
                        f"got {df['x_label'].iloc[row]}")
    feats = _features(directory)
    rows = {k: v.shape[0] for k, v in feats.items() if v is not None}
    if len(set(rows.values())) > 1:
        raise DataError(f"{directory}: feature files disagree on the number of items: {rows}")
    num_items = next(iter(rows.values()))
    if len(df) and df["itemID"].max() >= num_items:
        raise DataError(f"{path}: itemID {df['itemID'].max()} has no feature row (features have {num_items} rows)")
    num_users = int(df["userID"].max()) + 1 if len(df) else 0
    mats = {s: pair_matrix(part["userID"].to_numpy(), part["itemID"].to_numpy(), num_users=num_users, num_items=num_items)
            for s, label in zip(SPLITS, (0, 1, 2)) for part in [df[df["x_label"] == label]]}
    return TopKData(name=f"mmrec:{path.stem}", num_users=num_users, num_items=num_items, **mats, **feats)
