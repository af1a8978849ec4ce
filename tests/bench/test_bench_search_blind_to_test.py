"""The quality bench's search never reads a test metric: choosing a cell's point, proposing the next TPE point
and planning the later seeds run on stores whose test metrics raise when touched; the criterion decides."""
from __future__ import annotations

import json

import pytest

from em3.bench import quality
from em3.bench.runs import HASH_TAG, RunRecord, config_hash
from em3.bench.tpe import parse_space
from em3.config import flatten, preset


class PeekedAtTest(AssertionError):
    pass


class Guarded(dict):
    """Run metrics whose test/test_cold entries raise when read (get, [], in)."""

    def _check(self, key: object) -> None:
        if isinstance(key, str) and key.split("/")[0] in ("test", "test_cold"):
            raise PeekedAtTest(key)

    def get(self, key, default=None):
        self._check(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self._check(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self._check(key)
        return super().__contains__(key)


def _record(spec: quality.QualitySpec, arm: str, seed: int, point: dict[str, str], role: str,
            metrics: dict[str, float]) -> tuple[str, RunRecord]:
    h = config_hash(spec.config(arm, "din", seed, point))
    tags = {HASH_TAG: h, quality.ROLE_TAG: role, quality.POINT_TAG: json.dumps(point, sort_keys=True),
            quality.CELL_TAG: f"{arm}/din"}
    return h, RunRecord(run_id=h, status="FINISHED", tags=tags, params={}, metrics=Guarded(metrics))


def _metrics(val: float, val_cold: float, test: float) -> dict[str, float]:
    return {"val/auc": val, "val_cold/auc": val_cold, "test/auc": test, "test_cold/auc": test, "best_epoch": 3.0}


@pytest.mark.parametrize("criterion, best", [("val/auc", "0.002"), ("val_cold/auc", "0.004")])
def test_tpe_choice_and_plan_read_only_the_criterion(criterion, best):
    base = preset("tiny")
    space = parse_space(["train.lr_ranker=choice:0.001,0.002,0.004"], known=flatten(base))
    spec = quality.QualitySpec(base=base, arms=("id_only",), rankers=("din",), seeds=(0, 1), space=space,
                               trials=3, criterion=criterion)
    # test AUC is best where validation is worst: a search that peeked would choose 0.001.
    pts = {"0.001": _metrics(0.70, 0.60, 0.99), "0.002": _metrics(0.80, 0.61, 0.50),
           "0.004": _metrics(0.75, 0.65, 0.51)}
    done = dict(_record(spec, "id_only", 0, {"train.lr_ranker": v}, "search", m) for v, m in pts.items())
    (cell,) = quality.collect(spec, done)
    assert cell.searched == 3 and cell.chosen == {"train.lr_ranker": best}
    assert quality.planned_runs(spec, done) == []                      # the search is complete
    (later,) = quality.later_seed_runs(spec, done)
    assert later[1].train.seed == 1 and str(later[1].train.lr_ranker) == str(float(best))


def test_an_unfinished_tpe_search_proposes_without_reading_test_metrics():
    base = preset("tiny")
    space = parse_space(["train.lr_ranker=log:1e-3:1e-2"], known=flatten(base))
    spec = quality.QualitySpec(base=base, arms=("id_only",), rankers=("din",), seeds=(0,), space=space, trials=5)
    done = dict(_record(spec, "id_only", 0, {"train.lr_ranker": v}, "search", _metrics(a, 0.6, 0.9))
                for v, a in (("0.002", 0.8), ("0.005", 0.7)))
    (todo,) = quality.planned_runs(spec, done)
    assert todo[0] == "search" and config_hash(todo[1]) not in done


def test_a_grid_search_chooses_on_the_criterion_without_reading_test_metrics():
    base = preset("tiny")
    spec = quality.QualitySpec(base=base, arms=("id_only",), rankers=("din",), seeds=(0,),
                               grid={"train.lr_ranker": ("0.001", "0.002")})
    done = dict(_record(spec, "id_only", 0, {"train.lr_ranker": v}, "search", _metrics(a, 0.6, t))
                for v, a, t in (("0.001", 0.7, 0.99), ("0.002", 0.8, 0.1)))
    (cell,) = quality.collect(spec, done)
    assert cell.chosen == {"train.lr_ranker": "0.002"}


def test_a_test_criterion_is_refused_and_the_criterion_names_the_group():
    base = preset("tiny")
    with pytest.raises(ValueError, match="validation metrics only"):
        quality.QualitySpec(base=base, criterion="test/auc")
    assert (quality.QualitySpec(base=base, criterion="val_cold/auc").group
            != quality.QualitySpec(base=base).group)
