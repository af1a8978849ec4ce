"""`python -m em3 bench variant`: a cell's chosen point with extra overrides, resumable, chosen on validation only."""
from __future__ import annotations

import json

import pytest

from em3.bench.quality import CELL_TAG, POINT_TAG, ROLE_TAG
from em3.bench.runs import HASH_TAG, RunRecord, config_hash
from em3.bench.variant import (VARIANT_TAG, Comparison, cell_runs, chosen_search_run, run_variant, variant_configs)
from em3.config import ConfigError, preset, with_overrides


def _rec(run_id: str, cell: str, point: dict, *, role: str = "search", **metrics: float) -> RunRecord:
    return RunRecord(run_id=run_id, status="FINISHED", tags={ROLE_TAG: role, CELL_TAG: cell,
                                                             POINT_TAG: json.dumps(point, sort_keys=True)},
                     params={}, metrics=dict(metrics))


def test_the_point_is_the_cells_best_validation_run_never_a_test_metric():
    done = {"a": _rec("a", "em3/din", {"x": "1"}, **{"val/auc": 0.70, "test/auc": 0.99}),
            "b": _rec("b", "em3/din", {"x": "2"}, **{"val/auc": 0.75, "test/auc": 0.50}),
            "c": _rec("c", "em3/dcnv2", {"x": "3"}, **{"val/auc": 0.90}),
            "d": _rec("d", "em3/din", {"x": "4"}, role="table", **{"val/auc": 0.95})}
    assert chosen_search_run(done, "em3/din").run_id == "b"
    with pytest.raises(ConfigError, match="validation"):
        chosen_search_run(done, "em3/din", criterion="test/auc")
    with pytest.raises(ConfigError, match="em3/dcnv2, em3/din"):
        chosen_search_run(done, "id_only/din")


def test_a_no_op_override_is_refused_and_seeds_follow_the_table():
    base = preset("tiny")
    cfgs = variant_configs(base, {"encoder.image_top": "trained"}, [0, 2])
    assert [c.train.seed for c in cfgs] == [0, 2] and all(c.encoder.image_top == "trained" for c in cfgs)
    with pytest.raises(ConfigError, match="nothing to compare"):
        variant_configs(base, {"encoder.image_top": "frozen"}, [0])


def test_finished_variant_runs_are_skipped_and_new_ones_tagged():
    base = preset("tiny")
    cfgs = variant_configs(base, {"encoder.image_top": "trained"}, [0, 1])
    chosen = _rec("c", "em3/din", {"x": "1"})
    done = {config_hash(cfgs[0]): chosen}
    calls = []

    def train(cfg, *, tags, run_name):
        calls.append((cfg.train.seed, tags, run_name))
        return type("R", (), {"status": "FINISHED", "metrics": {"val/auc": 0.7}})()

    n = run_variant(cfgs, group="g-variant", chosen=chosen, overrides={"encoder.image_top": "trained"}, done=done,
                    train=train, log=lambda s: None)
    assert n == 1 and [c[0] for c in calls] == [1]
    tags = calls[0][1]
    assert tags[HASH_TAG] == config_hash(cfgs[1]) and tags[ROLE_TAG] == "variant"
    assert tags[VARIANT_TAG] == "encoder.image_top=trained" and tags[CELL_TAG] == "em3/din"
    assert json.loads(tags[POINT_TAG]) == {"x": "1"}


def test_the_comparison_pairs_the_cells_runs_at_its_point():
    base = preset("tiny")
    same_point = {config_hash(with_overrides(base, {"train.seed": s})): _rec(f"r{s}", "em3/din", {}, role="table",
                                                                              **{"test/auc": 0.70 + s / 100})
                  for s in (0, 1)}
    other = {config_hash(with_overrides(base, {"train.seed": 2, "train.lr_ranker": 0.5})): _rec("o", "em3/din", {})}
    runs = cell_runs({**same_point, **other}, base, [0, 1, 2])
    assert sorted(runs) == [0, 1]
    lines = Comparison(cell=runs, variant={}).lines(cell="em3/din", overrides={"encoder.image_top": "trained"})
    assert "| em3/din | 0,1 | – | 0.7050 ± 0.0071 |" in lines[2]
    assert lines[3].startswith("| em3/din + encoder.image_top=trained | – |")
