"""The MMRec/EM3 public-format loader on small files written by the test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from em3.errors import DataError
from em3.topk.config import TopKConfig
from em3.topk.mmrec import load_mmrec
from em3.topk.train import fit

ROWS = [  # userID, itemID, rating, timestamp, x_label
    (0, 0, 5, 100, 0), (0, 1, 4, 101, 0), (0, 2, 5, 102, 1), (0, 3, 3, 103, 2),
    (1, 1, 5, 100, 0), (1, 4, 5, 101, 0), (1, 0, 4, 102, 2),
    (2, 2, 4, 100, 0), (2, 3, 5, 101, 1), (2, 4, 2, 102, 2),
]


def write_dataset(root: Path, *, name: str = "baby", rows=ROWS, items: int = 5, image_dim: int = 4096,
                  text_dim: int = 384, header: str = "userID\titemID\trating\ttimestamp\tx_label") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [header] + ["\t".join(map(str, r)) for r in rows]
    (root / f"{name}.inter").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    np.save(root / "image_feat.npy", rng.normal(size=(items, image_dim)).astype(np.float32))
    np.save(root / "text_feat.npy", rng.normal(size=(items, text_dim)).astype(np.float32))
    return root


def test_loads_splits_and_features(tmp_path: Path):
    data = load_mmrec(write_dataset(tmp_path / "baby"))
    assert data.name == "mmrec:baby"
    assert (data.num_users, data.num_items) == (3, 5)
    assert sorted(zip(*data.train.nonzero())) == [(0, 0), (0, 1), (1, 1), (1, 4), (2, 2)]
    assert sorted(zip(*data.val.nonzero())) == [(0, 2), (2, 3)]
    assert sorted(zip(*data.test.nonzero())) == [(0, 3), (1, 0), (2, 4)]
    assert data.image_feat.shape == (5, 4096) and data.image_feat.dtype == np.float32
    assert data.text_feat.shape == (5, 384)
    assert np.allclose(data.image_feat, np.load(tmp_path / "baby" / "image_feat.npy"))


def test_name_selects_among_several_inter_files(tmp_path: Path):
    root = write_dataset(tmp_path / "d", name="baby")
    (root / "sports.inter").write_text((root / "baby.inter").read_text())
    with pytest.raises(DataError, match="exactly one"):
        load_mmrec(root)
    assert load_mmrec(root, name="sports").name == "mmrec:sports"


@pytest.mark.parametrize("case, match", [
    ("missing_column", "missing column.*x_label"),
    ("bad_split", "row 2, column x_label"),
    ("bad_id", "row 3, column itemID"),
    ("item_beyond_features", "itemID 4 has no feature row"),
    ("feature_rows_disagree", "disagree on the number of items"),
])
def test_malformed_files_name_the_fault(tmp_path: Path, case: str, match: str):
    root = tmp_path / case
    if case == "missing_column":
        write_dataset(root, rows=[r[:4] for r in ROWS], header="userID\titemID\trating\ttimestamp")
    elif case == "bad_split":
        write_dataset(root, rows=[(0, 0, 5, 1, 7)] + ROWS)
    elif case == "bad_id":
        write_dataset(root, rows=[ROWS[0], (0, "x", 5, 1, 0)] + ROWS)
    elif case == "item_beyond_features":
        write_dataset(root, items=4)
    else:
        write_dataset(root)
        np.save(root / "text_feat.npy", np.zeros((7, 384), np.float32))
    with pytest.raises(DataError, match=match):
        load_mmrec(root)


def test_missing_directory_and_features(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        load_mmrec(tmp_path / "nope")
    root = write_dataset(tmp_path / "nofeat")
    (root / "image_feat.npy").unlink()
    (root / "text_feat.npy").unlink()
    with pytest.raises(DataError, match="neither image_feat.npy nor text_feat.npy"):
        load_mmrec(root)


def test_freedom_trains_on_loaded_files(tmp_path: Path):
    data = load_mmrec(write_dataset(tmp_path / "baby", image_dim=16, text_dim=8))
    cfg = TopKConfig(model="freedom", epochs=2, batch_size=4, embedding_dim=8, knn_k=2, topk=(1, 20), device="cpu")
    result = fit(cfg, data)
    assert result.epochs_run == 2 and 1 <= result.best_epoch <= 2
    assert 0.0 <= result.test["recall@20"] <= 1.0
    # 5 items, training items excluded: every held-out positive is within the top 20.
    assert result.test["recall@20"] == pytest.approx(1.0)
