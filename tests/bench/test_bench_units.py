"""Bench logic without training: config hashes, the search, resumability and sharding, deltas, RESULTS.md blocks."""
from __future__ import annotations

from pathlib import Path

import pytest

from em3.bench import quality, quality_table
from em3.bench.efficiency import add_ratios
from em3.bench.offline import OfflineStore
from em3.bench.report import mean_std, write_block
from em3.bench.runs import RunRecord, config_hash
from em3.bench.search import grid_points, parse_grid, pick_best
from em3.config import ConfigError, flatten, preset, with_overrides


def test_config_hash_ignores_a_later_field_at_its_old_behaviour():
    """Runs logged before data.val_cold_item_frac existed keep their hash; a non-default value changes it."""
    a = preset("tiny")
    old = {k: v for k, v in flatten(a).items() if k != "data.val_cold_item_frac"}
    assert config_hash(a) == config_hash(old)
    assert config_hash(with_overrides(a, {"data.val_cold_item_frac": 0.1})) != config_hash(a)


def test_config_hash_leaves_out_how_a_run_is_executed():
    a = preset("tiny")
    assert config_hash(with_overrides(a, {"speed.threads": 1})) == config_hash(a)
    assert config_hash(with_overrides(a, {"speed.compute_dtype": "bf16"})) != config_hash(a)   # changes results


def test_config_hash_is_stable_and_sensitive():
    a, b = preset("tiny", "em3"), preset("tiny", "em3")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(preset("tiny", "id_only"))
    assert config_hash(flatten(a)) == config_hash(a)


def test_grid_parsing_points_and_pick():
    grid = parse_grid(["train.lr_ranker=1e-3,3e-3", "train.lr_content=1e-3"])
    points = grid_points(grid, known=flatten(preset("tiny")))
    assert points == [{"train.lr_content": "1e-3", "train.lr_ranker": "1e-3"},
                      {"train.lr_content": "1e-3", "train.lr_ranker": "3e-3"}]
    assert grid_points({}, known={}) == [{}]
    with pytest.raises(ConfigError, match="train.lr_rankr"):
        grid_points({"train.lr_rankr": ("1",)}, known=flatten(preset("tiny")))
    assert pick_best([({"a": "1"}, 0.6), ({"a": "2"}, float("nan")), ({"a": "3"}, 0.7)]) == {"a": "3"}
    assert pick_best([({"a": "1"}, float("nan"))]) is None


class FakeTrain:
    """Stands in for run_training: records each config into an OfflineStore-like dict, val AUC from the lr."""

    def __init__(self, store: OfflineStore):
        self.store, self.calls = store, []

    def __call__(self, cfg, *, tags, run_name):
        self.calls.append(run_name)
        metrics = {"val/auc": 0.5 + cfg.train.lr_ranker, "test/auc": 0.6 + cfg.train.seed / 100,
                   "test_cold/auc": 0.55, "best_epoch": 1.0, "time/train_seconds": 1.0}
        self.store.save({"hash": tags["em3.config_hash"], "tags": tags, "metrics": metrics, "history": {},
                         "config": {}, "run_name": run_name})
        return RunRecord(run_id=run_name, status="FINISHED", tags=tags, params={}, metrics=metrics)


def _spec(**kw) -> quality.QualitySpec:
    base = quality.base_config(data="synthetic", quick=True)
    args = {"arms": ("id_only", "em3"), "rankers": ("din",), "seeds": (0, 1),
            "grid": {"train.lr_ranker": ("1e-3", "3e-3")}, **kw}
    return quality.QualitySpec(base=base, **args)


def test_search_then_seeds_resumes_and_shards(tmp_path: Path):
    spec = _spec()
    store = OfflineStore(tmp_path / "off")
    train = FakeTrain(store)
    # Two shards, twice (as the GPU script's two phases): 2 arms x 2 points at seed 0, then seed 1 at the best point.
    for _ in range(2):
        for k in range(2):
            quality.run_quality(spec, log=lambda s: None, shard=(k, 2), train=train, finished=store.finished)
    assert len(train.calls) == 6 and len(store.finished()) == 6
    cells = quality.collect(spec, store.finished())
    assert [(c.arm, c.searched, sorted(c.runs)) for c in cells] == [("id_only", 2, [0, 1]), ("em3", 2, [0, 1])]
    assert all(c.chosen == {"train.lr_ranker": "3e-3"} for c in cells)   # the higher val AUC
    # A second call trains nothing: every config hash is already finished.
    assert quality.run_quality(spec, log=lambda s: None, train=train, finished=store.finished) == 0


class OtherProcess:
    """Claims of a pool in which another process holds `held` and finishes it after one poll."""

    def __init__(self, store: OfflineStore, held: str, record: dict):
        self.store, self.held, self.record, self.polls = store, held, record, 0
        assert store.claim(held)

    def claim(self, h: str) -> bool:
        return self.store.claim(h)

    def release(self, h: str) -> None:
        self.store.release(h)

    def pending(self) -> int:
        self.polls += 1
        if self.polls > 1 and not (self.store.root / f"{self.held}.json").exists():
            self.store.save(self.record)            # the other process finishes its run
        return self.store.pending()


def test_pool_claims_share_out_runs_and_wait_for_the_others(tmp_path: Path):
    spec = _spec()
    store = OfflineStore(tmp_path / "off")
    train = FakeTrain(store)
    first = quality.planned_runs(spec, {})
    h = config_hash(first[0][1])
    other = OtherProcess(store, h, {"hash": h, "tags": {"em3.config_hash": h}, "config": {}, "history": {},
                                    "metrics": {"val/auc": 0.9, "test/auc": 0.6, "best_epoch": 1.0}})
    quality.run_quality(spec, log=lambda s: None, train=train, finished=store.finished, claims=other, poll_s=0.0)
    # This process trained every run but the one the other process held, and it did not exit while that
    # run was in progress: the later seed of that cell depends on it and was trained here after it finished.
    assert len(train.calls) == 5 and other.polls >= 2
    assert len(store.finished()) == 6 and store.pending() == 0
    assert all(len(c.runs) == 2 for c in quality.collect(spec, store.finished()))
    assert store.clear_claims() == 6 and not list(store.root.glob("*.claim"))


def test_a_failed_claimed_run_is_released(tmp_path: Path):
    store = OfflineStore(tmp_path / "off")

    def broken(cfg, *, tags, run_name):
        raise RuntimeError("boom")

    quality.run_quality(_spec(), log=lambda s: None, train=broken, finished=store.finished, claims=store, poll_s=0.0)
    assert not list(store.root.glob("*.claim"))     # nothing left claimed: the next call may retry
    assert store.claim("abc") and not store.claim("abc")


def test_failed_run_is_skipped_not_retried_forever(tmp_path: Path):
    spec = _spec()
    store = OfflineStore(tmp_path / "off")
    calls = []

    def broken(cfg, *, tags, run_name):
        calls.append(run_name)
        raise RuntimeError("boom")

    assert quality.run_quality(spec, log=lambda s: None, train=broken, finished=store.finished) == 0
    assert len(calls) == 4   # each seed-0 search point tried once; no seeds without a finished search


def test_table_has_every_row_and_marks_missing(tmp_path: Path):
    spec = _spec()
    store = OfflineStore(tmp_path / "off")
    quality.run_quality(spec, log=lambda s: None, train=FakeTrain(store), finished=store.finished)
    cells = quality.collect(spec, store.finished())
    text = quality_table.render(spec, cells, command="cmd", machine="m")
    for arm in spec.arms:
        assert f"| {arm} | din | 2/2 |" in text
    # em3 vs itself is 0, vs id_only: identical fake metrics -> a zero delta judged as noise? std is 0 -> not noise
    assert "| 0 |" in text
    partial = _spec(seeds=(0, 1, 2))
    assert "Still missing" in quality_table.render(partial, quality.collect(partial, store.finished()),
                                                   command="c", machine="m")


def test_unfinished_search_shows_no_numbers(tmp_path: Path):
    """A cell with one of two search points trained has no chosen point yet: the table leaves it blank."""
    spec = _spec(arms=("id_only",), seeds=(0,))
    store = OfflineStore(tmp_path / "off")
    FakeTrain(store)(spec.config("id_only", "din", 0, spec.points[1]),
                     tags={"em3.config_hash": config_hash(spec.config("id_only", "din", 0, spec.points[1]))},
                     run_name="one point")
    cells = quality.collect(spec, store.finished())
    assert cells[0].searched == 1 and cells[0].runs                  # collect still sees the run ...
    row = next(line for line in quality_table.render(spec, cells, command="c", machine="m").splitlines()
               if line.startswith("| id_only |"))
    assert "(search 1/2: not shown until complete) | – | – |" in row and "0.6" not in row   # ... the table does not
    # Where the search stands is shown, on validation only: the trial's val AUC (0.5 + lr), not its test AUC (0.6).
    text = quality_table.render(spec, cells, command="c", machine="m")
    progress = text.split("Searches in progress")[1].splitlines()
    assert "| id_only | din | 1/2 | 0.5030 | 0.5030 |" in progress and "0.6000" not in text
    assert quality_table.figure(quality_table.settled(cells, 2), path=tmp_path / "f.png") is None


def test_delta_noise_call():
    a = quality.Cell("x", "din", 1, {}, {s: RunRecord("r", "FINISHED", {}, {}, {"m": v}) for s, v in
                                           enumerate([0.70, 0.71, 0.72])})
    b = quality.Cell("y", "din", 1, {}, {s: RunRecord("r", "FINISHED", {}, {}, {"m": v}) for s, v in
                                           enumerate([0.70, 0.72, 0.71])})
    d, noise = quality_table.delta(a, b, "m")
    assert d == pytest.approx(0.0) and noise is True
    c = quality.Cell("z", "din", 1, {}, {s: RunRecord("r", "FINISHED", {}, {}, {"m": v}) for s, v in
                                           enumerate([0.80, 0.81, 0.80])})
    assert quality_table.delta(c, a, "m")[1] is False
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))


def test_write_block_keeps_other_sections(tmp_path: Path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n## Top-K\n\nkeep me\n")
    write_block("table v1", section="## Efficiency", name="efficiency-cpu", path=path)
    write_block("table v2", section="## Efficiency", name="efficiency-cpu", path=path)
    write_block("gpu", section="## Efficiency", name="efficiency-cuda", path=path)
    text = path.read_text()
    assert "keep me" in text and "table v2" in text and "table v1" not in text and "gpu" in text
    assert text.count("## Efficiency") == 1


def test_ratios_to_id_only():
    rows = [{"variant": "id_only", "length": 5, "step_ms": 2.0, "peak_memory_mb": 10.0, "step_memory_mb": 1.0,
             "params_trainable": 4, "params_total": 4},
            {"variant": "lora", "length": 5, "step_ms": 6.0, "peak_memory_mb": 20.0, "step_memory_mb": 3.0,
             "params_trainable": 8, "params_total": 12}]
    add_ratios(rows)
    assert rows[0]["step_ms_x"] == 1.0 and rows[0]["params_total_x"] == 1.0
    assert rows[1]["step_ms_x"] == 3.0 and rows[1]["params_trainable_x"] == 2.0
