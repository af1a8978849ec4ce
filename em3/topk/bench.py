"""`python -m em3 bench topk`: VBPR, LightGCN, FREEDOM and EM3-on-FREEDOM under one protocol and one
tuning budget, every run in MLflow (resumable), the table into docs/RESULTS.md.

Tuning: each model gets the same number of grid points (GRIDS), trained on the first seed and
chosen by validation Recall@20; the chosen config then runs on every seed. A run whose
(model, seed, config hash) is already FINISHED in MLflow is reused, not retrained.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from em3.errors import EM3Error
from em3.paths import REPO_ROOT
from em3.topk.config import TOPK_MODELS, TopKConfig, config_hash, with_overrides
from em3.topk.data import TopKData
from em3.topk.results import AUTHORS_TABLE, LABELS, relative_gain, replace_section, results_table
from em3.topk.tracking import RunRecord, find_finished, tracked_fit

# The same tuning budget for every model. "small" (the default, sized for 2 CPU cores): the learning
# rate, the knob that matters most under an epoch cap, everything else at the authors' defaults.
# "authors": 4 points each; FREEDOM's is a subset of the authors' grid (dropout x reg_weight) and
# EM3 gets exactly FREEDOM's grid, its own settings (tau, lambda, N_q, dropout) at the authors' defaults.
GRIDS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "small": {m: [{"lr": 1e-3}, {"lr": 1e-2}] for m in TOPK_MODELS},
    "authors": {
        "vbpr": [{"reg_weight": r} for r in (1e-5, 1e-4, 1e-3, 1e-2)],
        "lightgcn": [{"reg_weight": r, "n_layers": n} for r in (1e-4, 1e-3) for n in (2, 3)],
        "freedom": [{"edge_dropout": d, "reg_weight": r} for d in (0.8, 0.9) for r in (1e-4, 1e-3)],
        "em3_freedom": [{"edge_dropout": d, "reg_weight": r} for d in (0.8, 0.9) for r in (1e-4, 1e-3)],
    },
}
FULL = {"epochs": 30, "patience": 20}       # sized for ~35 min on 2 shared CPU cores (MovieLens-100K)
QUICK = {"epochs": 3, "patience": 20}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="tiny synthetic preset, 1 seed, 3 epochs, no tuning (minutes)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; --quick: 0)")
    p.add_argument("--models", default=",".join(TOPK_MODELS), help=f"comma-separated subset of {','.join(TOPK_MODELS)}")
    p.add_argument("--epochs", type=int, default=None, help="max epochs per run (default: 30; --quick 3)")
    p.add_argument("--patience", type=int, default=None, help="early-stop patience on validation Recall@20 (default 20)")
    p.add_argument("--grid", choices=tuple(GRIDS), default="small", help="tuning grid (see GRIDS; default small)")
    p.add_argument("--no-tune", action="store_true", help="skip the grid: every model at its defaults")
    p.add_argument("--data-dir", default="", help="MovieLens-100K directory (default $EM3_MOVIELENS_DIR)")
    p.add_argument("--mmrec", default="", help="an MMRec-format dataset directory (<name>.inter, image_feat.npy, "
                                                "text_feat.npy) instead of MovieLens")
    p.add_argument("--report-only", action="store_true", help="train nothing: tabulate the FINISHED runs MLflow "
                                                                 "already holds for this bench (missing cells are listed)")
    p.add_argument("--group", default="", help="MLflow group id (em3.group); default derived from data, models, seeds, "
                                               "budget and grid (set it to split one bench over parallel processes)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="training device")
    p.add_argument("--results", default=str(REPO_ROOT / "docs" / "RESULTS.md"),
                   help="markdown file whose top-K section is (re)written; empty = do not write")


def load_data(args: argparse.Namespace) -> TopKData:
    """The bench's dataset: tiny synthetic (--quick), an MMRec directory (--mmrec) or MovieLens-100K."""
    if args.mmrec:
        from em3.topk.mmrec import load_mmrec
        return load_mmrec(args.mmrec)
    from em3.config import preset, with_overrides as cfg_overrides
    from em3.data.cache import build_item_tokens
    from em3.data.load import load_dataset
    from em3.data.samples import build_samples
    from em3.topk.data import from_samples

    cfg = preset("tiny") if args.quick else preset("movielens")
    # No cold items: MMRec's protocol ranks every item (see em3.topk.data.from_samples).
    cfg = cfg_overrides(cfg, {"data.cold_item_frac": 0.0, **({"data.data_dir": args.data_dir} if args.data_dir else {})})
    raw = load_dataset(cfg.data)
    samples = build_samples(raw, cfg.data)
    tokens = build_item_tokens(raw, samples, cfg.encoder, progress=False)
    name = f"synthetic-{cfg.data.preset}" if cfg.data.source == "synthetic" else cfg.data.source
    return from_samples(samples, tokens, name=name)


def group_id(dataset: str, models: list[str], seeds: list[int], budget: dict[str, Any], grid: str | None) -> str:
    blob = json.dumps([dataset, models, seeds, budget, grid and {m: GRIDS[grid][m] for m in models}], sort_keys=True)
    return f"topk-{dataset}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def _line(rec: RunRecord, overrides: dict[str, Any]) -> str:
    m = rec.metrics
    how = "reused" if rec.reused else f"{m.get('time/train_seconds', 0):.0f} s"
    return (f"  {rec.model:12s} seed {rec.seed} {json.dumps(overrides):48s} val R@20 {m['val/recall@20']:.4f}  "
            f"test R@20 {m['test/recall@20']:.4f}  best epoch {m['best_epoch']:.0f}  ({how})")


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in TOPK_MODELS]
    if bad:
        raise EM3Error(f"--models: unknown model {bad[0]!r}; expected a subset of {', '.join(TOPK_MODELS)}")
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",") if s.strip()]
    budget = dict(QUICK if args.quick else FULL)
    budget.update({k: v for k, v in (("epochs", args.epochs), ("patience", args.patience)) if v is not None})
    tune = not (args.no_tune or args.quick)
    t0 = time.perf_counter()
    data = load_data(args)
    print(f"top-K bench on {data.name}: {json.dumps(data.summary())}", flush=True)
    group = args.group or group_id(data.name, models, seeds, budget, args.grid if tune else None)
    per_model: dict[str, list[dict[str, float]]] = {}
    tuning: dict[str, list[tuple[dict[str, Any], float]]] = {}
    missing: list[str] = []

    def cell(cfg: TopKConfig, phase: str) -> RunRecord | None:
        if not args.report_only:
            return tracked_fit(cfg, data, group=group, phase=phase)
        found = find_finished(cfg.model, cfg.seed, config_hash(cfg, dataset=data.name))
        if found is None:
            missing.append(f"{cfg.model} seed {cfg.seed} lr {cfg.lr:g}")
        return found

    for model in models:
        base = TopKConfig(model=model, seed=seeds[0], device=args.device, **budget)
        grid = GRIDS[args.grid][model] if tune else [{}]
        tried = []
        for point in grid:
            rec = cell(with_overrides(base, point), "tune")
            if rec is not None:
                print(_line(rec, point), flush=True)
                tried.append((point, rec.metrics["val/recall@20"]))
        tuning[model] = tried
        if not tried:
            continue
        best_point = max(tried, key=lambda t: t[1])[0]
        chosen = with_overrides(base, best_point)
        per_model[model] = []
        for seed in seeds:
            rec = cell(with_overrides(chosen, {"seed": seed}), "seeds")
            if rec is None:
                continue
            if seed != seeds[0]:
                print(_line(rec, best_point), flush=True)
            per_model[model].append(rec.metrics)
        if not per_model[model]:
            del per_model[model]
    return {"data": data, "group": group, "seeds": seeds, "budget": budget, "grid": args.grid if tune else "none",
            "per_model": per_model, "missing": missing,
            "tuning": tuning, "seconds": time.perf_counter() - t0}


def section_body(out: dict[str, Any], *, command: str) -> str:
    data: TopKData = out["data"]
    per_model, tuning = out["per_model"], out["tuning"]
    s = data.summary()
    gains = [g for g in (relative_gain(per_model, m) for m in ("recall@20", "ndcg@20")) if g]
    grid_rows = [f"| {LABELS.get(m, m)} | " + "; ".join(f"{json.dumps(p) if p else 'defaults'} → {v:.4f}" for p, v in t) + " |"
                 for m, t in tuning.items() if t]
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores visible, torch {torch.__version__}, "
               f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    return "\n".join([
        f"Dataset **{data.name}** ({s['users']} users, {s['items']} items; {s['train_pairs']} / {s['val_pairs']} / "
        f"{s['test_pairs']} train / validation / test positives). MovieLens protocol: positives = rating ≥ 4, "
        "per-user chronological 80/10/10 split of all ratings (as for CTR), no cold items; item features = masked "
        "mean of the cached encoder tokens (MobileNetV2 posters, MiniLM text).",
        "",
        "Protocol as MMRec: BPR with one sampled negative, Adam (lr from the grid below), batch 2048, full ranking over all items "
        "excluding the user's training items (validation and test alike, as MMRec), early stop after "
        f"{out['budget']['patience']} epochs without a better validation Recall@20 (max {out['budget']['epochs']} "
        "epochs), test metrics at the best validation epoch. "
        f"Mean ± std over seeds {', '.join(map(str, out['seeds']))} (test set).",
        "",
        results_table(per_model),
        "",
        *(f"- {g}" for g in gains),
        "",
        f"Tuning (grid `{out['grid']}`, the same budget for every model: each grid point on the first seed, "
        "the best by validation Recall@20 then run on every seed):",
        "",
        "| model | grid point → validation R@20 |",
        "| --- | --- |",
        *grid_rows,
        "",
        *([f"Missing (not finished when the table was written): {'; '.join(out['missing'])}.", ""] if out["missing"] else []),
        f"Command: `{command}` — {out['seconds'] / 60:.1f} min on {machine}; MLflow group `{out['group']}`, "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "### Authors' numbers — Amazon Baby / Sports (a different dataset; compare gains, not levels)",
        "",
        "From the EM3 paper (MMRec split, full ranking, test). EM3 over FREEDOM there: +2 to +5% relative.",
        "",
        AUTHORS_TABLE,
    ])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m em3 bench topk", description=__doc__)
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        out = run_bench(args)
    except EM3Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\n{results_table(out['per_model'])}\n", flush=True)
    for g in (relative_gain(out["per_model"], m) for m in ("recall@20", "ndcg@20")):
        if g:
            print(g)
    if args.results:
        command = shlex.join(["python", "-m", "em3", "bench", "topk", *(argv if argv is not None else sys.argv[3:])])
        replace_section(Path(args.results), section_body(out, command=command))
        print(f"wrote the top-K section of {args.results}")
    return 0
