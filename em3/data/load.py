"""Which loader a DataConfig means: `load_dataset(cfg)` dispatches to the synthetic, MovieLens or files source."""
from __future__ import annotations

from em3.config import DataConfig
from em3.data.schema import RawDataset
from em3.errors import DataError
from em3.paths import resolve_movielens_dir


def load_dataset(cfg: DataConfig) -> RawDataset:
    """The RawDataset the config names; a missing directory raises DataError saying how to give one."""
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
