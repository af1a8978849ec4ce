"""A variant of a quality-table cell: the cell's chosen point with extra overrides, at the table's seeds.

    python -m em3 bench variant --group bench-quality-0bc84721cc --cell em3/din --set encoder.image_top=trained

It measures a lever the table does not search (issue 13's true end-to-end image arm: `encoder.image_top =
trained`) where the search put the cell, seed for seed against the cell's own runs. The point is read from
the group's runs (the ledger is restored first): the cell's search run with the best validation criterion,
as the table chooses it. Runs go to the group `<group>-variant` (tagged with the cell, the point and the
overrides) and its ledger folder; a variant run whose config hash is already FINISHED there is skipped, so
the same command resumes. Validation picks nothing here: test metrics are only printed beside the cell's.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from em3.bench.quality import CELL_TAG, POINT_TAG, ROLE_TAG, result_line
from em3.bench.report import fmt_pm, mean_std
from em3.bench.runs import GROUP_TAG, HASH_TAG, KIND_TAG, RunRecord, config_hash
from em3.config import Config, ConfigError, parse_set, with_overrides

VARIANT_TAG = "em3.bench_variant"   # the overrides, as KEY=VALUE;KEY=VALUE
COMPARED = ("val/auc", "test/auc", "test_cold/auc", "test_cold/gauc", "time/train_epoch_seconds")


def variant_group(group: str) -> str:
    return f"{group}-variant"


def describe(overrides: Mapping[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(overrides.items()))


def chosen_search_run(done: Mapping[str, RunRecord], cell: str, *, criterion: str = "val/auc") -> RunRecord:
    """The cell's search run with the best `criterion` (a validation metric), oldest first on ties."""
    if not criterion.startswith("val"):
        raise ConfigError(f"--criterion {criterion!r}: the point is chosen on a validation metric only")
    best, best_value = None, float("-inf")
    for rec in done.values():
        value = rec.metrics.get(criterion, float("nan"))
        if rec.tags.get(ROLE_TAG) == "search" and rec.tags.get(CELL_TAG) == cell and value == value \
                and value > best_value:
            best, best_value = rec, value
    if best is None:
        cells = sorted({r.tags.get(CELL_TAG, "") for r in done.values()} - {""})
        raise ConfigError(f"--cell {cell!r}: no finished search run of that cell in the group "
                          f"(cells there: {', '.join(cells) or 'none'})")
    return best


def cell_runs(done: Mapping[str, RunRecord], base: Config, seeds: Sequence[int]) -> dict[int, RunRecord]:
    """seed -> the cell's finished run at the chosen point (`base` = the chosen run's config): the table's runs."""
    hashes = {s: config_hash(with_overrides(base, {"train.seed": s})) for s in seeds}
    return {s: done[h] for s, h in hashes.items() if h in done}


def variant_configs(base: Config, overrides: Mapping[str, str], seeds: Sequence[int]) -> list[Config]:
    """The chosen run's config with the overrides, one per seed (a no-op override is refused: it measures nothing)."""
    cfgs = [with_overrides(base, {"train.seed": s, **overrides}) for s in seeds]
    if config_hash(with_overrides(base, {"train.seed": seeds[0]})) == config_hash(cfgs[0]):
        raise ConfigError(f"--set {describe(overrides)}: the chosen point already has these values; nothing to compare")
    return cfgs


@dataclass
class Comparison:
    cell: dict[int, RunRecord]
    variant: dict[int, RunRecord]

    def lines(self, *, cell: str, overrides: Mapping[str, str]) -> list[str]:
        """A markdown table: the cell's runs and the variant's, mean ± std over their seeds, per metric."""
        head = "| runs | seeds | " + " | ".join(COMPARED) + " |"
        rows = [head, "|" + " --- |" * (len(COMPARED) + 2)]
        for name, runs in ((cell, self.cell), (f"{cell} + {describe(overrides)}", self.variant)):
            stats = [mean_std([r.metrics.get(k, float("nan")) for r in runs.values()]) for k in COMPARED]
            cells = [fmt_pm(m, s, 1 if k.startswith("time/") else 4) for (m, s), k in zip(stats, COMPARED)]
            rows.append(f"| {name} | {','.join(map(str, sorted(runs))) or '–'} | " + " | ".join(cells) + " |")
        return rows


def run_variant(cfgs: Sequence[Config], *, group: str, chosen: RunRecord, overrides: Mapping[str, str],
                done: Mapping[str, RunRecord], train: Callable[..., object],
                log: Callable[[str], None] = print, after_run: Callable[[], None] | None = None) -> int:
    """Train every variant config not yet FINISHED in `done` (the variant group); returns how many were trained."""
    trained = 0
    for cfg in cfgs:
        h = config_hash(cfg)
        name = f"{chosen.tags.get(CELL_TAG, '').replace('/', '-')}-s{cfg.train.seed}+variant"
        if h in done:
            log(f"  {name}: finished before (hash {h}), skipped")
            continue
        log(f"[{time.strftime('%H:%M:%S')}] variant {name} {describe(overrides)}")
        tags = {GROUP_TAG: group, KIND_TAG: "ctr", HASH_TAG: h, ROLE_TAG: "variant",
                CELL_TAG: chosen.tags.get(CELL_TAG, ""), POINT_TAG: chosen.tags.get(POINT_TAG, "{}"),
                VARIANT_TAG: describe(overrides)}
        t0 = time.perf_counter()
        result = train(cfg, tags=tags, run_name=name)
        trained += 1
        log(result_line(result, time.perf_counter() - t0))
        if after_run is not None:
            after_run()
    return trained


def point_of(chosen: RunRecord) -> dict[str, str]:
    return json.loads(chosen.tags.get(POINT_TAG, "{}"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m em3 bench variant",
                                description="A quality-table cell's chosen point with extra overrides, at the "
                                            "table's seeds, printed beside the cell's own runs; resumable.")
    p.add_argument("--group", required=True, help="the quality table's group (docs/bench/runs/<group>/)")
    p.add_argument("--cell", required=True, metavar="ARM/RANKER", help="the cell, e.g. em3/din")
    p.add_argument("--set", action="append", required=True, metavar="KEY=VALUE",
                   help="the variant's override (repeatable), e.g. encoder.image_top=trained")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds (default 0,1,2: the table's)")
    p.add_argument("--criterion", default="val/auc", help="the validation metric the cell's point was chosen on")
    p.add_argument("--print-only", action="store_true", help="train nothing; print the comparison")
    p.add_argument("--no-ledger", action="store_true", help="neither restore from nor record into the ledger")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from em3.bench import ledger
    from em3.bench.runs import finished_by_hash
    from em3.errors import EM3Error
    from em3.training.run import logged_config, run_training
    from em3.training.runtime import sigterm_as_interrupt

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    log = lambda s: print(s, flush=True)   # noqa: E731
    vgroup = variant_group(args.group)
    previous = sigterm_as_interrupt()       # stops like Ctrl-C: the run in progress ends KILLED
    try:
        sets = parse_set(args.set)
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if not seeds:
            raise ConfigError(f"--seeds {args.seeds!r}: no seed")
        if not args.no_ledger:
            ledger.restore(args.group, log=log)
            ledger.restore(vgroup, log=log)
        done = finished_by_hash(args.group)
        chosen = chosen_search_run(done, args.cell, criterion=args.criterion)
        base = logged_config(chosen.run_id)
        cfgs = variant_configs(base, sets, seeds)
        log(f"variant of {args.cell} at its chosen point {point_of(chosen)}: {describe(sets)}, seeds {seeds}")

        def record() -> None:
            if not args.no_ledger:
                ledger.save_group(vgroup, finished_by_hash(vgroup), log=log)

        if not args.print_only:
            run_variant(cfgs, group=vgroup, chosen=chosen, overrides=sets, done=finished_by_hash(vgroup),
                        train=run_training, log=log, after_run=record)
        vdone = finished_by_hash(vgroup)
        variant = {c.train.seed: vdone[h] for c in cfgs if (h := config_hash(c)) in vdone}
        print("\n".join(Comparison(cell=cell_runs(done, base, seeds), variant=variant)
                        .lines(cell=args.cell, overrides=sets)), flush=True)
    except (EM3Error, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the finished runs are kept (MLflow and the ledger); the same command resumes",
              file=sys.stderr, flush=True)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
