"""`python -m em3 ablate`: train a grid of arms x rankers x seeds as one MLflow group; print mean ± std."""
from __future__ import annotations

import argparse
import json
import os
import sys
import uuid

from em3.cli.train import add_config_args, base_config, finish_config
from em3.config import ConfigError
from em3.errors import EM3Error


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m em3 ablate", description=__doc__)
    add_config_args(p)
    p.add_argument("--arms", default="em3,id_only", help="comma-separated arms (default em3,id_only)")
    p.add_argument("--rankers", default="din", help="comma-separated rankers (default din)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    p.add_argument("--group", default="", help="em3.group tag (default: a fresh id)")
    p.add_argument("--json", action="store_true", help="print the table as one last line of JSON records")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")   # keep stderr for our own messages
    try:
        seeds = [int(s) for s in _list(args.seeds)]
    except ValueError:
        print(f"error: --seeds {args.seeds!r}: expected comma-separated integers", file=sys.stderr)
        return 2
    try:
        base = base_config(args)
        grid = [(arm, ranker, seed, finish_config(base, arm=arm, ranker=ranker, seed=seed, overrides=args.overrides))
                for arm in _list(args.arms) for ranker in _list(args.rankers) for seed in seeds]
    except ConfigError as e:          # every config is validated before any training starts
        print(f"error: {e}", file=sys.stderr)
        return 2
    import pandas as pd

    from em3.evaluation.views_tables import format_summary, group_summary   # the dashboard's table, reused
    from em3.training.run import run_training

    group = args.group or f"ablate-{uuid.uuid4().hex[:8]}"
    records = []
    for i, (arm, ranker, seed, cfg) in enumerate(grid, start=1):
        print(f"[{i}/{len(grid)}] {arm} / {ranker} / seed {seed}", file=sys.stderr, flush=True)
        try:
            result = run_training(cfg, tags={"em3.group": group}, run_name=f"{arm}-{ranker}-s{seed}")
        except EM3Error as e:
            print(f"error: {arm} / {ranker} / seed {seed}: {e}", file=sys.stderr)
            return 1
        records.append({"arm": arm, "ranker": ranker, "seed": seed, "run_id": result.run_id,
                        "metrics": result.metrics})
    several = len(_list(args.rankers)) > 1
    runs = pd.DataFrame([{"arm": f"{r['arm']}/{r['ranker']}" if several else r["arm"], **r["metrics"]}
                         for r in records])
    baseline = "em3/" + _list(args.rankers)[0] if several else "em3"
    summary = group_summary(runs, baseline=baseline)
    print(f"group {group}: {len(records)} runs (mean ± std over seeds; Δ against {baseline})")
    print(format_summary(summary).to_string())
    if args.json:
        print(json.dumps({"group": group, "rows": json.loads(summary.reset_index().to_json(orient="records"))}))
    return 0
