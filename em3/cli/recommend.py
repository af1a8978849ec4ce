"""`python -m em3 recommend`: a user's top-K items from a logged run (model rebuilt from config.json + best checkpoint)."""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from em3.errors import EM3Error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m em3 recommend", description=__doc__)
    p.add_argument("--run-id", required=True, help="MLflow run id of a finished training run, or a unique prefix of "
                                                   "one (the dashboard's short ids, e.g. 947fed7c)")
    p.add_argument("--user", required=True, help="the original user_id")
    p.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")   # keep stderr for our own messages
    if args.k <= 0:
        print(f"error: -k must be > 0, got {args.k}", file=sys.stderr)
        return 2
    import torch

    from em3.evaluation.recommend import recommend
    from em3.training.restore import restore_run, user_index
    from em3.training.tracking import resolve_run_id

    try:
        args.run_id = resolve_run_id(args.run_id)
        run = restore_run(args.run_id)
        u = user_index(run.samples, args.user, run_id=args.run_id)
    except EM3Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    recs = recommend(run.model, run.samples, np.array([u]), k=args.k, device=torch.device("cpu"))
    items = next(iter(recs.values()))
    if args.json:
        print(json.dumps({"run_id": args.run_id, "user": args.user, "items": items}))
        return 0
    titles = run.samples.item_attributes["title"] if "title" in run.samples.item_attributes else None
    index_of = {int(i): n + 1 for n, i in enumerate(run.samples.item_ids)}
    print(f"top-{args.k} for user {args.user} (run {args.run_id}, arm {run.cfg.model.arm}):")
    for rank, (item_id, score) in enumerate(items, start=1):
        title = f"  {titles[index_of[item_id]]}" if titles is not None else ""
        print(f"{rank:>3}. item {item_id:<8} score {score:+.4f}{title}")
    return 0
