"""The quality bench: every arm x ranker x seed through run_training, resumable, with a per-arm grid search.

Order of work (so a partial session leaves the most useful table): for each ranker, each grid
point, every arm at the first seed (the search; its winner *is* the table's first-seed run),
then the remaining seeds with each (arm, ranker)'s chosen point. Every run is tagged with
the bench group and its config hash; a run whose hash already FINISHED in the group is skipped.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple, Protocol, Sequence

from em3.bench.runs import GROUP_TAG, HASH_TAG, KIND_TAG, RunRecord, config_hash, finished_by_hash
from em3.bench.search import grid_points, pick_best
from em3.bench.tpe import Knob, next_point
from em3.config import ARMS, RANKERS, Config, flatten, preset, with_arm, with_overrides

QUICK_MOVIELENS = {"train.epochs": 1, "train.max_steps_per_epoch": 20}
QUICK_SYNTHETIC = {"train.epochs": 1, "train.max_steps_per_epoch": 3}
ROLE_TAG = "em3.bench_role"
POINT_TAG = "em3.bench_point"
CRITERIA = ("val/auc", "val/gauc", "val_cold/auc", "val_cold/gauc")   # cold ones need data.val_cold_item_frac > 0
CELL_TAG = "em3.bench_cell"     # "arm/ranker" as the bench asked for it


class Planned(NamedTuple):
    """A run the bench still has to train: its role, its config, and the search point it stands for.

    The point is what the search proposed, not what the config holds: an arm's own overrides win over a
    searched knob (id_only trains without CIC whatever weight the TPE proposed), and the point is still
    the trial's place in the space, so the cell's history stays inside the space and is never re-proposed.
    """

    role: str
    cfg: Config
    point: dict[str, str]


@dataclass(frozen=True)
class QualitySpec:
    """What the quality bench trains: a base config, the arms, rankers, seeds and the search.

    The search is either a grid (every point for every cell) or, with `space`, `trials` points per cell
    proposed one at a time by a seeded TPE from that cell's finished points (em3.bench.tpe).
    """

    base: Config
    arms: tuple[str, ...] = tuple(ARMS)
    rankers: tuple[str, ...] = RANKERS
    seeds: tuple[int, ...] = (0, 1, 2)
    grid: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    space: Mapping[str, Knob] = field(default_factory=dict)
    trials: int = 0
    criterion: str = "val/auc"          # the validation metric the search maximises (never a test metric)

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(f"--criterion {self.criterion!r}: expected one of {', '.join(CRITERIA)} "
                             "(a search reads validation metrics only)")

    @property
    def points(self) -> list[dict[str, str]]:
        """The grid's points ([{}] without a grid; a TPE search has no fixed points)."""
        return grid_points(self.grid, known=flatten(self.base))

    @property
    def n_points(self) -> int:
        """Search points per cell: the TPE trials, or the grid's size."""
        return self.trials if self.space else len(self.points)

    @property
    def knobs(self) -> set[str]:
        return set(self.grid) | set(self.space)

    @property
    def group(self) -> str:
        """The MLflow group: a hash of the base config and the search (not of arms/seeds, so sessions can add them)."""
        key = {**flatten(self.base), "__grid__": json.dumps({k: list(v) for k, v in sorted(self.grid.items())})}
        if self.criterion != "val/auc":
            key["__criterion__"] = self.criterion
        if self.space:
            key["__space__"] = json.dumps([[k.key, k.kind, k.low, k.high, list(k.choices)]
                                           for k in sorted(self.space.values(), key=lambda k: k.key)] + [self.trials])
        return f"bench-quality-{config_hash(key)[:10]}"

    def config(self, arm: str, ranker: str, seed: int, point: Mapping[str, str]) -> Config:
        """The run of a cell at a seed and search point. The arm's own overrides are applied last, so a
        searched knob never contradicts the arm (a searched CIC weight does not turn CIC on in em3_no_cic)."""
        cfg = with_arm(self.base, arm)
        return with_overrides(cfg, {"model.ranker.kind": ranker, "train.seed": seed, **point, **ARMS[arm]})

    def cell_index(self, cfg: Config) -> int:
        """The position of cfg's (ranker, arm) cell in the table: what --shard splits on, so a shard holds
        whole cells (a TPE cell's trials are sequential) and the shards hold equal numbers of them."""
        return self.rankers.index(cfg.model.ranker.kind) * len(self.arms) + self.arms.index(cfg.model.arm)


def base_config(*, data: str = "movielens", quick: bool = False, sets: Mapping[str, str] | None = None) -> Config:
    """The bench's base config: the movielens preset (or tiny synthetic), shrunk by --quick, then --set."""
    cfg = preset("tiny" if data == "synthetic" else "movielens")
    if quick:
        cfg = with_overrides(cfg, QUICK_SYNTHETIC if data == "synthetic" else QUICK_MOVIELENS)
    return with_overrides(cfg, dict(sets or {}))


@dataclass
class Cell:
    """One (arm, ranker) of the table: its search candidates, chosen point and per-seed runs."""

    arm: str
    ranker: str
    searched: int                                   # search points finished (of spec.n_points)
    chosen: dict[str, str] | None
    runs: dict[int, RunRecord] = field(default_factory=dict)   # seed -> finished run
    trials: list[float] = field(default_factory=list)          # the search's criterion values, oldest first


def collect(spec: QualitySpec, done: Mapping[str, RunRecord] | None = None) -> list[Cell]:
    """The table's cells from the store: what is finished, what the search chose, what is missing."""
    done = finished_by_hash(spec.group) if done is None else done
    points, first = spec.points, spec.seeds[0]
    cells = []
    for ranker in spec.rankers:
        for arm in spec.arms:
            if spec.space:
                cand = searched_points(spec, done, arm, ranker)
                chosen = pick_best(cand)
            else:
                cand = [(p, done[h].metrics.get(spec.criterion, float("nan")))
                        for p in points if (h := config_hash(spec.config(arm, ranker, first, p))) in done]
                chosen = pick_best(cand) if len(points) > 1 else points[0]
            cell = Cell(arm=arm, ranker=ranker, searched=len(cand), chosen=chosen, trials=[v for _, v in cand])
            if chosen is not None:
                for seed in spec.seeds:
                    rec = done.get(config_hash(spec.config(arm, ranker, seed, chosen)))
                    if rec is not None:
                        cell.runs[seed] = rec
            cells.append(cell)
    return cells


def searched_points(spec: QualitySpec, done: Mapping[str, RunRecord], arm: str,
                    ranker: str) -> list[tuple[dict[str, str], float]]:
    """A TPE cell's finished search points at the first seed, oldest first, as (point, criterion value).

    Matched by the cell tag the bench gave them (not their arm tag: a searched knob may make a run `custom`).
    """
    out = []
    for r in done.values():
        if r.tags.get(ROLE_TAG) != "search" or r.tags.get(CELL_TAG) != f"{arm}/{ranker}":
            continue
        point = json.loads(r.tags.get(POINT_TAG, "{}"))
        if set(point) == set(spec.space):
            out.append((point, r.metrics.get(spec.criterion, float("nan"))))
    return out


def _tpe_runs(spec: QualitySpec, done: Mapping[str, RunRecord]) -> list[Planned]:
    """Each unfinished TPE cell's next point, cells with the fewest finished trials first."""
    todo = []
    for ranker in spec.rankers:
        for arm in spec.arms:
            history = searched_points(spec, done, arm, ranker)
            if len(history) >= spec.trials:
                continue
            point = next_point(spec.space, history, seed=spec.seeds[0])
            if point is None:
                continue
            cfg = spec.config(arm, ranker, spec.seeds[0], point)
            if config_hash(cfg) not in done:
                todo.append((len(history), Planned("search", cfg, point)))
    return [run for _, run in sorted(todo, key=lambda t: t[0])]


def planned_runs(spec: QualitySpec, done: Mapping[str, RunRecord]) -> list[Planned]:
    """The search runs still to do at the first seed, in order (the later seeds: later_seed_runs)."""
    if spec.space:
        return _tpe_runs(spec, done)
    todo: list[Planned] = []
    points, first = spec.points, spec.seeds[0]
    # Point-major within a ranker: every arm at the first point (the defaults) before any second point,
    # so a partial session still compares every arm.
    for ranker in spec.rankers:
        for p in points:
            for arm in spec.arms:
                cfg = spec.config(arm, ranker, first, p)
                if config_hash(cfg) not in done:
                    todo.append(Planned("search" if len(points) > 1 else "table", cfg, dict(p)))
    return todo


def later_seed_runs(spec: QualitySpec, done: Mapping[str, RunRecord]) -> list[Planned]:
    """Runs of the remaining seeds for every cell whose search is complete."""
    todo = []
    n = spec.n_points
    for seed in spec.seeds[1:]:
        for cell in collect(spec, done):
            if cell.chosen is None or cell.searched < n:
                continue
            cfg = spec.config(cell.arm, cell.ranker, seed, cell.chosen)
            if config_hash(cfg) not in done:
                todo.append(Planned("table", cfg, dict(cell.chosen)))
    return todo


def run_quality(spec: QualitySpec, *, log: Callable[[str], None] = print,
                after_run: Callable[[], None] | None = None, budget_s: float = 0.0,
                shard: tuple[int, int] = (0, 1), train: Callable[..., object] | None = None,
                finished: Callable[[], Mapping[str, RunRecord]] | None = None,
                claims: Claims | None = None, poll_s: float = 5.0) -> int:
    """Train every missing run of the spec (search first, then seeds); returns how many runs were trained.

    `after_run` is called after each run (the CLI rewrites the table there); `budget_s` > 0 stops
    starting new runs after that many seconds. `shard=(k, n)` trains only the runs of the cells whose
    index (QualitySpec.cell_index) is k mod n, so n processes can share one store. `train`/`finished`
    default to run_training and the MLflow group (em3.bench.offline swaps in a JSON store). A failed
    run is logged and left for the next call. With `claims` (a pool of processes sharing one store), a
    run is trained only by the process that claims it; when nothing is left to claim but runs are still in progress
    elsewhere, the process waits for them (their results may open up later seeds) instead of exiting.
    """
    if train is None:
        from em3.training.run import run_training as train
    finished = finished or (lambda: finished_by_hash(spec.group))
    start = time.perf_counter()
    trained = 0
    failed: set[str] = set()   # tried and failed in this call: left for the next call
    taken: set[str] = set()    # claimed by another process of the pool
    waiting = False
    for stage in (planned_runs, later_seed_runs):
        while True:
            done, skip = finished(), failed | taken
            todo = [run for run in stage(spec, done)
                    if config_hash(run.cfg) not in skip and spec.cell_index(run.cfg) % shard[1] == shard[0]]
            if not todo:
                if stage is later_seed_runs and claims is not None:
                    if claims.pending() > 0:        # runs in progress elsewhere may open up later seeds
                        taken.clear()               # (or fail and be released): wait, then look again
                        waiting = True
                        time.sleep(poll_s)
                        continue
                    if waiting:                     # the last of them finished since `done` was read
                        waiting = False
                        continue
                break
            if budget_s and time.perf_counter() - start > budget_s:
                log(f"budget of {budget_s:.0f} s spent; {len(todo)}+ runs left for the next call")
                return trained
            role, cfg, point = todo[0]
            h = config_hash(cfg)
            if claims is not None and not claims.claim(h):
                taken.add(h)
                continue
            name = f"{cfg.model.arm}-{cfg.model.ranker.kind}-s{cfg.train.seed}"
            log(f"[{time.strftime('%H:%M:%S')}] {role} {name} {point or ''} ({len(todo)} left in this stage)")
            t0 = time.perf_counter()
            tags = {GROUP_TAG: spec.group, KIND_TAG: "ctr", HASH_TAG: h, ROLE_TAG: role,
                    POINT_TAG: json.dumps(point, sort_keys=True), CELL_TAG: f"{cfg.model.arm}/{cfg.model.ranker.kind}"}
            try:
                result = train(cfg, tags=tags, run_name=name)
            except Exception as e:  # noqa: BLE001 - one failed run must not stop the bench
                log(f"  FAILED {name}: {type(e).__name__}: {e}")
                failed.add(h)
                if claims is not None:
                    claims.release(h)
                continue
            trained += 1
            log(result_line(result, time.perf_counter() - t0))
            if after_run is not None:
                after_run()
    return trained


def result_line(result: object, seconds: float) -> str:
    """One log line of a finished bench run: status, time, val / test / cold AUC, best epoch."""
    m = getattr(result, "metrics", {})
    return (f"  {getattr(result, 'status', '?')} in {seconds:.0f} s: val AUC {m.get('val/auc', float('nan')):.4f}, "
            f"test AUC {m.get('test/auc', float('nan')):.4f}, cold AUC {m.get('test_cold/auc', float('nan')):.4f}, "
            f"best epoch {m.get('best_epoch', 0):.0f}")


class Claims(Protocol):
    """How the processes of a pool share out runs (em3.bench.offline.OfflineStore implements it)."""

    def claim(self, h: str) -> bool: ...
    def release(self, h: str) -> None: ...
    def pending(self) -> int: ...


def parse_list(text: str, choices: Sequence[str], name: str) -> tuple[str, ...]:
    """A comma list checked against the allowed choices (the error names the flag and the bad value)."""
    from em3.config import ConfigError

    values = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in choices]
    if bad or not values:
        raise ConfigError(f"{name}: unknown value {bad[0] if bad else text!r}; expected from {', '.join(choices)}")
    return values
