"""A searched knob never redefines an arm, and --shard splits whole cells evenly.

Session 8 searched model.cic.weight over every arm: em3_no_cic then trained with CIC (its metrics equal em3's to
the last digit) and precomputed trained with a CIC loss. An arm's own overrides now win over the point, while the
run still records the point the TPE proposed (so the cell's history stays inside the space).
"""
from __future__ import annotations

import json
from pathlib import Path

from em3.arms import arm_of
from em3.bench import quality
from em3.bench.offline import OfflineStore
from em3.bench.runs import RunRecord, config_hash
from em3.bench.tpe import parse_space
from em3.config import ARMS, RANKERS, flatten

SPACE = ["train.lr_ranker=log:1e-3:8e-3", "model.cic.weight=log:1e-4:0.3", "model.cic.temperature=log:0.05:0.5"]


def _spec(trials: int = 2) -> quality.QualitySpec:
    base = quality.base_config(data="synthetic", quick=True)
    return quality.QualitySpec(base=base, seeds=(0, 1), space=parse_space(SPACE, known=flatten(base)),
                               trials=trials)


class Recorder:
    """Stands in for run_training: keeps each run's tags and config, val AUC from the learning rate."""

    def __init__(self, store: OfflineStore):
        self.store, self.runs = store, []

    def __call__(self, cfg, *, tags, run_name):
        self.runs.append((cfg, tags))
        metrics = {"val/auc": 0.5 + cfg.train.lr_ranker, "test/auc": 0.6, "best_epoch": 1.0}
        self.store.save({"hash": tags["em3.config_hash"], "tags": tags, "metrics": metrics, "history": {},
                         "config": {}, "run_name": run_name})
        return RunRecord(run_id=run_name, status="FINISHED", tags=tags, params={}, metrics=metrics)


def test_no_run_of_a_cell_is_custom_and_each_records_the_proposed_point(tmp_path: Path):
    spec = _spec()
    store = OfflineStore(tmp_path / "off")
    train = Recorder(store)
    quality.run_quality(spec, log=lambda s: None, train=train, finished=store.finished)
    assert len(train.runs) == len(ARMS) * len(RANKERS) * (spec.trials + 1)
    for cfg, tags in train.runs:
        arm = tags[quality.CELL_TAG].split("/")[0]
        assert arm_of(cfg) == arm == cfg.model.arm                      # never tagged `custom`
        point = json.loads(tags[quality.POINT_TAG])
        assert set(point) == set(spec.space)
        pinned = ARMS[arm].get("model.cic.weight")
        # CIC-off arms train at weight 0; the point keeps the proposal (inside the space, > 0).
        assert cfg.model.cic.weight == (pinned if pinned is not None else float(point["model.cic.weight"]))
        assert float(point["model.cic.weight"]) >= 1e-4
    # The search of each cell went on from its recorded points: no cell trained the same point twice.
    points = {}
    for _, tags in train.runs:
        if tags[quality.ROLE_TAG] == "search":
            points.setdefault(tags[quality.CELL_TAG], []).append(tags[quality.POINT_TAG])
    assert all(len(set(p)) == spec.trials for p in points.values()) and len(points) == len(ARMS) * len(RANKERS)


def test_a_cic_off_arm_ignores_a_searched_weight_but_em3_follows_it():
    spec = _spec()
    point = {"train.lr_ranker": "0.002", "model.cic.weight": "0.05", "model.cic.temperature": "0.1"}
    assert spec.config("em3_no_cic", "din", 0, point).model.cic.weight == 0.0
    assert spec.config("precomputed", "din", 0, point).model.cic.weight == 0.0
    assert spec.config("em3", "din", 0, point).model.cic.weight == 0.05
    assert spec.config("em3_no_cic", "din", 0, point).train.lr_ranker == 0.002   # other knobs still apply
    # em3 has no overrides of its own: its config (and so its hash) is what it was before the pinning.
    assert config_hash(spec.config("em3", "din", 0, point)) == config_hash(
        quality.with_overrides(quality.with_arm(spec.base, "em3"),
                               {"model.ranker.kind": "din", "train.seed": 0, **point}))


def test_shards_hold_whole_cells_and_equal_numbers_of_them(tmp_path: Path):
    spec = _spec(trials=1)
    store = OfflineStore(tmp_path / "off")
    cells = []
    for k in range(2):
        train = Recorder(store)
        quality.run_quality(spec, log=lambda s: None, shard=(k, 2), train=train, finished=store.finished)
        cells.append({tags[quality.CELL_TAG] for _, tags in train.runs})
    n = len(ARMS) * len(RANKERS)
    assert len(cells[0]) == len(cells[1]) == n // 2 and not cells[0] & cells[1]
    assert len(store.finished()) == n * 2                               # every cell's search and later seed
