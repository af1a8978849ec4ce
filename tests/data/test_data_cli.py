"""`python -m em3 data` and load_dataset: summaries, dispatch, and bad input as exit 2 without a traceback."""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from em3.cli.data import main
from em3.config import DataConfig
from em3.data.load import load_dataset
from em3.errors import DataError
from tests.conftest import REPO


def test_summary_of_tiny(capsys):
    assert main(["--source", "synthetic", "--preset", "tiny", "--summary"]) == 0
    out = capsys.readouterr().out
    for needle in ("synthetic-tiny", "users          100", "items          200", "interactions", "positive rate",
                   "train ", "val ", "test ", "test_cold ", "history (L=10)", "median", "p90", "empty",
                   "images         200/200 readable"):
        assert needle in out, needle


def test_json_summary_is_consistent(capsys):
    assert main(["--preset", "tiny", "--json", "--max-history", "5", "--seed", "3"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["history"]["max_len"] == 5 and stats["history"]["max"] <= 5
    assert sum(v["samples"] for v in stats["splits"].values()) == stats["interactions"]
    assert stats["cold_items"] == 20 and stats["images"]["missing"] == 0


def test_files_source_summary(tmp_path: Path, capsys):
    from tests.data.conftest import write_files_dataset
    root = write_files_dataset(tmp_path / "mine")
    assert main(["--source", "files", "--data-dir", str(root)]) == 0
    assert "3/5 readable" in capsys.readouterr().out


def test_bad_input_exits_2_with_the_message(tmp_path: Path, capsys, monkeypatch):
    assert main(["--source", "files", "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope does not exist" in err and "Traceback" not in err
    monkeypatch.delenv("EM3_MOVIELENS_DIR", raising=False)
    assert main(["--source", "movielens-100k"]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert main(["--max-history", "0"]) == 2
    assert "data.max_history" in capsys.readouterr().err


def test_module_entry_point_has_no_traceback(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "em3", "data", "--source", "files", "--data-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "missing items.parquet or items.csv" in proc.stderr and "Traceback" not in proc.stderr


def test_build_cache_calls_the_feature_cache(monkeypatch, capsys):
    seen = {}

    def build_item_tokens(raw, samples, enc_cfg, *, modalities, progress=True):
        seen.update(raw=raw.name, items=samples.num_items, encoder=enc_cfg.image_encoder, modalities=modalities)
        part = lambda t, grid, missing: types.SimpleNamespace(tokens=np.zeros(t), grid=grid, missing=missing)
        return types.SimpleNamespace(modalities={"image": part((201, 4, 8), (2, 2), 3),
                                                 "text": part((201, 16, 8), None, 0)})

    monkeypatch.setitem(sys.modules, "em3.data.cache", types.SimpleNamespace(build_item_tokens=build_item_tokens))
    assert main(["--preset", "tiny", "--build-cache"]) == 0
    assert seen == {"raw": "synthetic-tiny", "items": 200, "encoder": "scratch", "modalities": ("image", "text")}
    assert "feature cache  image (201, 4, 8) grid (2, 2), 3 masked; text (201, 16, 8);" in capsys.readouterr().out


def test_load_dataset_dispatch(tmp_path: Path, monkeypatch):
    assert load_dataset(DataConfig(source="synthetic", preset="tiny")).name == "synthetic-tiny"
    monkeypatch.delenv("EM3_MOVIELENS_DIR", raising=False)
    with pytest.raises(DataError, match="EM3_MOVIELENS_DIR"):
        load_dataset(DataConfig(source="movielens-100k"))
    monkeypatch.setenv("EM3_MOVIELENS_DIR", str(tmp_path / "ml"))
    with pytest.raises(DataError, match=r"ml does not exist"):
        load_dataset(DataConfig(source="movielens-100k"))
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset(DataConfig(source="files"))
