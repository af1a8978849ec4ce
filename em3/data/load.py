"""Which loader a DataConfig means: `load_dataset(cfg)` dispatches to the synthetic, MovieLens or files source."""
from __future__ import annotations

import dataclasses

from em3.config import AUTO_USER_FEATURES, DataConfig
from em3.data.schema import RawDataset
from em3.errors import DataError
from em3.paths import resolve_movielens_dir


def load_dataset(cfg: DataConfig) -> RawDataset:
    """The RawDataset the config names, its item_fields as data.item_fields chooses; a missing directory
    raises DataError saying how to give one."""
    raw = _load(cfg)
    if cfg.item_fields == (AUTO_USER_FEATURES,):
        return raw
    missing = [c for c in cfg.item_fields if c not in raw.items.columns]
    if missing:
        raise DataError(f"data.item_fields: {missing} are not columns of {raw.name}'s item table "
                        f"(its own fields: {', '.join(raw.item_fields) or 'none'})")
    return dataclasses.replace(raw, item_fields=tuple(cfg.item_fields))


def _load(cfg: DataConfig) -> RawDataset:
    if cfg.source == "synthetic":
        from em3.data.synthetic import generate
        return generate(cfg.preset, cfg.split_seed)
    if cfg.source == "movielens-100k":
        from em3.data.movielens import load_movielens
        data_dir = resolve_movielens_dir(cfg.data_dir)
        if not data_dir:
            raise DataError("movielens-100k: no data directory given; pass --data-dir DIR (data.data_dir) "
                            "or set EM3_MOVIELENS_DIR to the folder holding ml-100k/, items.csv and posters/")
        return load_movielens(data_dir)
    if cfg.source == "files":
        from em3.data.files import load_files
        if not cfg.data_dir:
            raise DataError("files: no data directory given; pass --data-dir DIR (data.data_dir) pointing at "
                            "a folder with items.csv|parquet and interactions.csv|parquet")
        return load_files(cfg.data_dir)
    raise DataError(f"data.source: unknown source {cfg.source!r}")
