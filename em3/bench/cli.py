"""Entry points of `python -m em3 bench quality` and `python -m em3 bench efficiency` (em3/cli/bench.py dispatches here)."""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time

from em3.config import ARMS, RANKERS, ConfigError, parse_set
from em3.errors import EM3Error


def _common(p: argparse.ArgumentParser, *, long_data: bool = False) -> None:
    p.add_argument("--quick", action="store_true", help="shrink everything to run in a few minutes")
    p.add_argument("--data", choices=("movielens", "synthetic") + (("long",) if long_data else ()),
                   default="movielens",
                   help="movielens (the benchmark; needs $EM3_MOVIELENS_DIR) or the tiny synthetic preset (tests)"
                   + ("; long: the `long` synthetic preset, users with 1,000+ positives (scratch encoders)"
                      if long_data else ""))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/RESULTS.md and docs/img")


def quality_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m em3 bench quality",
                                description="Every arm x ranker x seed on MovieLens-100K; resumable; writes "
                                            "the quality table into docs/RESULTS.md.")
    _common(p)
    p.add_argument("--seeds", default=None, help="comma list of seeds (default 0,1,2; --quick: 0)")
    p.add_argument("--arms", default=",".join(ARMS), help="comma list of arms (default: all)")
    p.add_argument("--rankers", default=",".join(RANKERS), help="comma list of rankers (default din,dcnv2)")
    p.add_argument("--grid", action="append", default=None, metavar="KEY=V1,V2",
                   help="search grid, repeatable (default: the documented lr grid; --quick: none)")
    p.add_argument("--space", action="append", default=None, metavar="KEY=KIND:...",
                   help="search by seeded TPE instead of a grid, repeatable: KEY=log:LOW:HIGH, float:LOW:HIGH, "
                        "int:LOW:HIGH or choice:A,B (e.g. train.lr_ranker=log:5e-4:8e-3)")
    p.add_argument("--trials", type=int, default=6, help="with --space: search points per arm x ranker (default 6)")
    p.add_argument("--criterion", default="val/auc",
                   help="validation metric the search maximises: val/auc (default), val/gauc, val_cold/auc or "
                        "val_cold/gauc (cold ones need --set data.val_cold_item_frac=F > 0); never a test metric")
    p.add_argument("--budget-minutes", type=float, default=0.0, help="start no new run after this many minutes")
    p.add_argument("--shard", default="0/1", metavar="K/N",
                   help="train only the runs whose config hash is K mod N (N processes sharing one store)")
    p.add_argument("--offline-dir", default="", help="train without MLflow into this directory of JSON records "
                   "(for a machine without MLflow); implies --no-write")
    p.add_argument("--workers", type=int, default=1, help="with --offline-dir: train in this many processes that "
                   "share out the runs (claim files in the directory); for a GPU the small runs leave idle")
    p.add_argument("--pool-worker", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--import-offline", default="", metavar="DIR",
                   help="first copy the JSON records of DIR (from --offline-dir elsewhere) into MLflow")
    p.add_argument("--export-offline", default="", metavar="DIR",
                   help="write the group's finished runs into DIR as records and stop, so an --offline-dir pool "
                   "started on DIR elsewhere skips them")
    p.add_argument("--table-only", action="store_true", help="only rewrite the table from what MLflow holds")
    p.add_argument("--no-ledger", action="store_true",
                   help="neither restore runs from nor record runs into the committed ledger docs/bench/runs/<group>/ "
                        "(by default the store first gets the ledger's runs it lacks, and every finished run is "
                        "recorded there: the table survives a checkout without mlruns/)")
    return p


# Flags that change how a call runs, not what the table is: left out of the command the table names.
_RUN_FLAGS = {"--table-only": 0, "--no-write": 0, "--budget-minutes": 1, "--shard": 1, "--offline-dir": 1,
              "--import-offline": 1, "--export-offline": 1, "--workers": 1, "--pool-worker": 1, "--no-ledger": 0}


def _table_args(argv: list[str]) -> list[str]:
    out, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        name = a.split("=", 1)[0]
        if name in _RUN_FLAGS:
            skip = _RUN_FLAGS[name] if "=" not in a else 0
            continue
        out.append(a)
    return out


def quality_main(argv: list[str] | None = None) -> int:
    from em3.bench import quality, quality_table, report
    from em3.bench.search import DEFAULT_GRID, parse_grid
    from em3.bench.tpe import parse_space
    from em3.config import flatten

    args = quality_parser().parse_args(argv)
    try:
        sets = parse_set(args.set)
        base = quality.base_config(data=args.data, quick=args.quick, sets=sets)
        seeds = tuple(int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",") if s.strip())
        space = parse_space(args.space, known=flatten(base)) if args.space else {}
        if space and args.grid is not None:
            raise ValueError("--grid and --space: choose one search")
        if space and args.trials < 1:
            raise ValueError(f"--trials {args.trials}: expected >= 1")
        if args.grid is not None:
            grid = parse_grid(args.grid)
        else:
            grid = {} if (args.quick or space) else dict(DEFAULT_GRID)
        spec = quality.QualitySpec(base=base, arms=quality.parse_list(args.arms, tuple(ARMS), "--arms"),
                                   rankers=quality.parse_list(args.rankers, RANKERS, "--rankers"),
                                   seeds=seeds, grid=grid, space=space, trials=args.trials if space else 0,
                                   criterion=args.criterion)
        if spec.criterion.startswith("val_cold/") and base.data.val_cold_item_frac <= 0:
            raise ValueError(f"--criterion {spec.criterion}: the split has no val_cold "
                             "(add --set data.val_cold_item_frac=0.1)")
        _ = spec.points   # validates the grid keys now
        k, n = (int(v) for v in args.shard.split("/"))
        if not 0 <= k < n:
            raise ValueError(f"--shard {args.shard!r}: expected K/N with 0 <= K < N")
        if args.workers < 1:
            raise ValueError(f"--workers {args.workers}: expected >= 1")
        if args.workers > 1 and not args.offline_dir:
            raise ValueError("--workers needs --offline-dir (the pool shares out runs through its claim files)")
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from em3.bench import ledger

    command = "python -m em3 bench quality " + " ".join(shlex.quote(a) for a in _table_args(argv or []))
    machine = report.machine_line()

    def write_table() -> None:
        from em3.bench.runs import backfill_alignment, finished_by_hash

        done = finished_by_hash(spec.group)
        backfill_alignment(done, log=lambda s: print(s, flush=True))   # runs logged before align/catalogue_*
        if not (args.no_ledger or args.no_write or args.quick):       # quick and scratch tables stay uncommitted
            ledger.save_group(spec.group, done, log=lambda s: print(s, flush=True))
        cells = quality.collect(spec, done)
        if args.no_write:
            return
        fig = quality_table.figure(quality_table.settled(cells, spec.n_points))
        body = quality_table.render(spec, cells, command=command.strip(), machine=machine, figure=fig)
        report.write_block(body, section=quality_table.SECTION, name="quality")

    print(f"quality bench: group {spec.group}, {len(spec.arms)} arms x {len(spec.rankers)} rankers x "
          f"{len(seeds)} seeds, {spec.n_points} search point(s)" + (" by TPE" if spec.space else ""), flush=True)
    trained = 0
    log = lambda s: print(s, flush=True)   # noqa: E731
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")   # the ledger reads config.json per run
    from em3.training.runtime import sigterm_as_interrupt

    previous = sigterm_as_interrupt()              # stops like Ctrl-C: the run in progress ends KILLED
    try:
        if args.offline_dir:
            from em3.bench.offline import OfflineStore, offline_trainer, run_pool

            store = OfflineStore(args.offline_dir)
            if args.workers > 1:
                return run_pool(list(argv if argv is not None else sys.argv[1:]), args.workers, store, log=log)
            if args.pool_worker >= 0:
                log = lambda s, w=args.pool_worker: print(f"[w{w}] {s}", flush=True)   # noqa: E731
            trained = quality.run_quality(spec, log=log, budget_s=args.budget_minutes * 60, shard=(k, n),
                                          train=offline_trainer(store), finished=store.finished,
                                          claims=store if args.pool_worker >= 0 else None)
            print(f"trained {trained} run(s) into {args.offline_dir}", flush=True)
            return 0
        if args.export_offline:
            from em3.bench.offline import export_records

            export_records(spec.group, args.export_offline, log=log)
            return 0
        if args.import_offline:
            from em3.bench.offline import import_records

            import_records(args.import_offline, origin="offline", log=log)
        if not args.no_ledger:
            ledger.restore(spec.group, log=log)
        if not args.table_only:
            trained = quality.run_quality(spec, log=log, after_run=write_table,
                                          budget_s=args.budget_minutes * 60, shard=(k, n))
        write_table()
    except (EM3Error, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted after {trained} run(s): the finished ones are kept (MLflow and the ledger), the run in "
              "progress is marked KILLED; the same command resumes", file=sys.stderr, flush=True)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    cells = quality.collect(spec)
    done = sum(len(c.runs) for c in cells)
    print(f"trained {trained} run(s); table: {done}/{len(cells) * len(seeds)} runs finished "
          f"({time.strftime('%H:%M:%S')})")
    for c in cells:
        aucs = [f"{r.metrics.get('test/auc', float('nan')):.4f}" for r in c.runs.values()]
        print(f"  {c.arm:20s} {c.ranker:6s} seeds {len(c.runs)}/{len(seeds)} test AUC {' '.join(aucs) or '-'}")
    return 0


def efficiency_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m em3 bench efficiency",
                                description="Step time, samples/s, peak memory and parameters per history "
                                            "strategy and length L, plus the engineering levers; one run. "
                                            "--curve: the cost curve to L = 1,000 instead.")
    _common(p, long_data=True)
    p.add_argument("--lengths", default=None, help="comma list of history lengths (default 20,50,100,200; "
                                                  "--quick: 5,10)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per config (default 10; --quick: 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per config (default 3; --quick: 1)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--variants", default=None, help="semicolon list of configs (default: all: id_only;precomputed;frozen;lora;shared;lora, no dedup;lora, live backbones)")
    p.add_argument("--lever-lengths", default=None, help="measure the levers (dedup, live backbones) only at "
                   "these L (comma list; default: every L)")
    p.add_argument("--json-out", default="", help="also write the raw results as JSON here")
    p.add_argument("--from-json", default="", help="do not measure: log and write a --json-out file from elsewhere")
    p.add_argument("--machine", default="", help="with --from-json: the machine line for the table")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow (a machine without MLflow)")
    p.add_argument("--curve", action="store_true",
                   help="the cost curve: only id_only;precomputed;frozen;lora;shared, at L = 50,200,500,1000 "
                        "(capped at the data's longest history; --quick: 5,10); its own block in docs/RESULTS.md")
    p.add_argument("--memory-limit-gb", type=float, default=None,
                   help="address-space cap of each CPU probe, GiB; a config past it is reported as 'does not fit' "
                        "(default: 75%% of this machine's MemTotal; 0: no cap)")
    return p


def efficiency_main(argv: list[str] | None = None) -> int:
    from em3.bench import efficiency

    args = efficiency_parser().parse_args(argv)
    try:
        if args.from_json:
            import json
            from pathlib import Path

            result = json.loads(Path(args.from_json).read_text())
            if not args.no_track:
                efficiency.log_to_mlflow(result)
            if not args.no_write:
                efficiency.write_results(result, machine=args.machine or None)
            return 0
        from em3.bench import efficiency_curve, memory_limit

        sets = parse_set(args.set)
        every = efficiency_curve.CURVE_VARIANTS if args.curve else tuple(efficiency.VARIANTS)
        variants = every if args.variants is None else tuple(v.strip() for v in args.variants.split(";") if v.strip())
        unknown = [v for v in variants if v not in efficiency.VARIANTS]
        if unknown:
            raise ValueError(f"--variants: unknown {unknown[0]!r}; expected from {'; '.join(efficiency.VARIANTS)}")
        asked = tuple(int(v) for v in args.lengths.split(",") if v.strip()) if args.lengths else ()
        curve = None
        if args.curve:
            base = efficiency.base_config(data=args.data, sets=sets, device=args.device)
            curve = efficiency_curve.curve_spec(base, requested=asked, quick=args.quick)
            lengths = curve.lengths
            print(f"cost curve: {len(variants)} strategies x L = {', '.join(map(str, lengths))}; the longest "
                  f"history in {args.data} is {curve.longest_history:,} positives"
                  + (f" (so L stops there, not at {max(curve.requested):,})"
                     if max(curve.requested) > max(lengths) else ""), flush=True)
        else:
            lengths = asked or ((5, 10) if args.quick else (20, 50, 100, 200))
        limit = memory_limit.default_limit_gb() if args.memory_limit_gb is None else args.memory_limit_gb
        if limit < 0:
            raise ValueError(f"--memory-limit-gb {limit}: expected >= 0 (0: no cap)")
        command = "python -m em3 bench efficiency " + " ".join(shlex.quote(a) for a in (argv or []))
        efficiency.run_efficiency(data=args.data, quick=args.quick, sets=sets, lengths=lengths,
                                  steps=args.steps or (3 if args.quick else 10),
                                  warmup=args.warmup if args.warmup is not None else (1 if args.quick else 3),
                                  device=args.device, write=not args.no_write, command=command.strip(),
                                  log=lambda s: print(s, flush=True), json_out=args.json_out,
                                  variants=variants, track=not args.no_track,
                                  lever_lengths=None if args.lever_lengths is None else tuple(
                                      int(v) for v in args.lever_lengths.split(",") if v.strip()),
                                  memory_limit_gb=limit, curve=curve)
    except (EM3Error, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def speed_parser() -> argparse.ArgumentParser:
    from em3.bench.speed import QUICK_ROWS, ROWS

    p = argparse.ArgumentParser(prog="python -m em3 bench speed",
                                description="One training epoch + validation per row on the CPU: every speed "
                                            "lever on and off, seconds per epoch, GFLOP/s against the matmul peak, "
                                            "peak memory and the validation AUC after that epoch. Resumable.")
    _common(p)
    p.add_argument("--rows", default=None, help="semicolon list of rows (default: all: " + "; ".join(ROWS)
                   + f"; --quick: {'; '.join(QUICK_ROWS)})")
    p.add_argument("--json-out", default="", help="results file (default .cache/bench/speed-<hash>.json); rows "
                   "already in it with the same config are not measured again")
    return p


def speed_main(argv: list[str] | None = None) -> int:
    from em3.bench import speed

    args = speed_parser().parse_args(argv)
    try:
        rows = (speed.QUICK_ROWS if args.quick else tuple(speed.ROWS)) if args.rows is None else tuple(
            r.strip() for r in args.rows.split(";") if r.strip())
        unknown = [r for r in rows if r not in speed.ROWS]
        if unknown:
            raise ValueError(f"--rows: unknown row {unknown[0]!r}; expected from {'; '.join(speed.ROWS)}")
        command = "python -m em3 bench speed " + " ".join(shlex.quote(a) for a in (argv or []))
        speed.run_speed(data=args.data, quick=args.quick, sets=parse_set(args.set), rows=rows,
                        command=command.strip(), json_out=args.json_out, write=not args.no_write,
                        log=lambda s: print(s, flush=True))
    except (EM3Error, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
