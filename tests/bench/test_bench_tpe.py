"""The TPE search of the quality bench: knobs parse with errors that name them, points are deterministic in the
history (so shards and sessions agree), never repeat, and a quick bench trains exactly `trials` points a cell."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from em3.bench.tpe import STARTUP, next_point, parse_space
from em3.config import Config, ConfigError, flatten

KNOWN = flatten(Config())


@pytest.mark.parametrize("item, match", [
    ("train.lr_ranker", "expected key=log:LOW:HIGH"),
    ("train.lr_ranker=cubic:1:2", "expected key=log:LOW:HIGH"),
    ("train.no_such=log:1e-4:1e-2", "unknown config key 'train.no_such'"),
    ("train.lr_ranker=log:0:1e-2", "both > 0"),
    ("train.lr_ranker=float:2:1", "need LOW < HIGH"),
    ("model.fusion.num_queries=int:1:2.5", "both integers"),
    ("model.fusion.num_queries=choice:2", "at least two values"),
    ("train.lr_ranker=log:a:b", "two numbers"),
])
def test_bad_knobs_name_the_item(item, match):
    with pytest.raises(ConfigError, match=match):
        parse_space([item], known=KNOWN)


def test_a_knob_searched_twice_is_refused():
    with pytest.raises(ConfigError, match="searched twice"):
        parse_space(["train.lr_ranker=log:1e-4:1e-2", "train.lr_ranker=float:1e-4:1e-2"], known=KNOWN)


def _space():
    return parse_space(["train.lr_ranker=log:5e-4:8e-3", "model.fusion.num_queries=choice:1,2,4",
                        "model.fusion.num_layers=int:1:3"], known=KNOWN)


def _auc(p):   # a smooth optimum at lr 2e-3
    return 0.8 - 0.01 * abs(math.log(float(p["train.lr_ranker"]) / 2e-3))


def test_points_are_deterministic_in_the_history_inside_the_space_and_never_repeat():
    space, history = _space(), []
    for _ in range(8):
        p = next_point(space, history)
        assert p == next_point(space, list(history))                    # another shard / session asks the same
        assert 5e-4 <= float(p["train.lr_ranker"]) <= 8e-3
        assert p["model.fusion.num_queries"] in {"1", "2", "4"} and p["model.fusion.num_layers"] in {"1", "2", "3"}
        assert p not in [q for q, _ in history]
        history.append((p, _auc(p)))
    # the random start is the same for every cell: it does not depend on the values seen
    other = [(p, 0.5) for p, _ in history[:STARTUP - 1]]
    assert next_point(space, other) == next_point(space, history[:STARTUP - 1])
    # past the start, TPE models the history: different results, a different next point
    assert next_point(space, [(p, 1 - a) for p, a in history]) != next_point(space, history)


def test_history_outside_the_space_is_ignored_and_an_exhausted_space_says_so():
    space = parse_space(["model.fusion.num_queries=choice:1,2"], known=KNOWN)
    stray = [({"train.lr_ranker": "0.001"}, 0.7), ({"model.fusion.num_queries": "8"}, 0.9)]
    first = next_point(space, stray)
    assert first == next_point(space, [])
    second = next_point(space, [(first, 0.7)])
    assert {first["model.fusion.num_queries"], second["model.fusion.num_queries"]} == {"1", "2"}
    assert next_point(space, [(first, 0.7), (second, 0.6)]) is None  # both tried: nothing new to ask


@pytest.mark.slow
def test_quick_bench_trains_trials_points_per_cell_then_resumes(fresh_store: Path, capsys):
    from em3.bench import quality, quality_table
    from em3.bench.cli import quality_main
    from em3.bench.runs import finished_by_hash

    argv = ["--quick", "--data", "synthetic", "--arms", "id_only", "--rankers", "din", "--no-write",
            "--space", "train.lr_ranker=log:1e-3:3e-2", "--trials", "3"]
    assert quality_main(argv) == 0
    assert "trained 3 run(s); table: 1/1 runs finished" in capsys.readouterr().out
    assert quality_main(argv) == 0
    assert "trained 0 run(s)" in capsys.readouterr().out
    space = parse_space(["train.lr_ranker=log:1e-3:3e-2"], known=KNOWN)
    spec = quality.QualitySpec(base=quality.base_config(data="synthetic", quick=True), arms=("id_only",),
                               rankers=("din",), seeds=(0,), space=space, trials=3)
    done = finished_by_hash(spec.group)
    points = [json.loads(r.tags["em3.bench_point"]) for r in done.values()]
    assert len(points) == 3 and len({p["train.lr_ranker"] for p in points}) == 3
    (cell,) = quality.collect(spec, done)
    best = max(done.values(), key=lambda r: r.metrics["val/auc"])
    assert cell.searched == 3 and cell.chosen == json.loads(best.tags["em3.bench_point"])
    assert cell.runs[0].run_id == best.run_id                            # the winning search run is the table's
    text = quality_table.render(spec, [cell], command="c", machine="m")
    assert "seeded TPE" in text and "`train.lr_ranker` ∈ [0.001, 0.03] (log-uniform)" in text
    assert quality_main([*argv[:-4], "--space", "train.lr_ranker=log:1e-3:3e-2", "--grid", "train.lr_ranker=1e-3"]) == 2


def test_tuple_choices_split_on_bars_and_round_trip_through_the_point_tag():
    from em3.config import preset, with_overrides

    space = parse_space(["model.ranker.mlp_hidden=choice:128,64|256,128"], known=KNOWN)
    knob = space["model.ranker.mlp_hidden"]
    assert knob.choices == ("128,64", "256,128")
    assert knob.describe() == "`model.ranker.mlp_hidden` ∈ {128,64 | 256,128}"
    point = next_point(space, [])
    cfg = with_overrides(preset("tiny"), point)
    # the bench tags a run with flatten()'s text of the knob: it must read back as the same choice
    tagged = {k: str(v) for k, v in flatten(cfg).items() if k in space}
    assert tagged == point and cfg.model.ranker.mlp_hidden in ((128, 64), (256, 128))
    other = next_point(space, [(tagged, 0.7)])
    assert other is not None and other != point                     # the tagged point counts as tried
