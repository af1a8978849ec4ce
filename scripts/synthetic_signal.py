"""Does item content beat IDs on cold items? Train arms on a synthetic preset and compare, as JSON.

Drives the library's own pieces (data, feature cache, model, fit, evaluation) without MLflow, like
scripts/gpu_smoke.py, so it runs on a bare CUDA machine:

    python scripts/synthetic_signal.py --preset demo --arms id_only,em3,em3_image_only,em3_text_only \
        --seeds 0,1 --device auto --json-out synthetic_signal.json [--set train.epochs=8]

`--seeds` are model seeds (train.seed: initialisation, shuffling, dropout); the data and the cold
items stay those of data.split_seed. Prints one line per run and a final table; the JSON is
rewritten after every run, so a timeout keeps the finished ones. docs/notes/synthetic_signal.md
has the measured numbers.

A search that never looks at test: each `--variant NAME:key=value;key=value` is a set of model or
training overrides (an empty one is the preset as it is); every arm trains under every variant and
seed, and `--choose-on val_cold/auc` picks, per arm, the variant with the best mean of that
validation metric (the preset needs a val_cold split: data.val_cold_item_frac > 0). The final table
then shows each arm at its chosen variant. `--jobs N` trains N runs at a time in worker processes
(one torch thread each by default), longest arms first.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from em3.config import parse_set, preset, with_overrides  # noqa: E402
from em3.data.prepare import prepare  # noqa: E402
from em3.evaluation.evaluate import evaluate_splits  # noqa: E402
from em3.models.em3 import build_model  # noqa: E402
from em3.training.distributed import resolve_device  # noqa: E402
from em3.training.fit import fit  # noqa: E402

COLUMNS = ("test/auc", "test_cold/auc", "test_cold/gauc", "val/auc", "val_cold/auc")
# Longest first, so a pool of workers ends together (em3 runs two Fusion-Q-Former passes).
COST = {"em3": 0, "em3_shared_history": 0, "em3_no_cic": 1, "em3_frozen_history": 1, "em3_image_only": 2,
        "em3_text_only": 2, "em3_mean_fusion": 3, "precomputed": 4, "id_only": 5}
_STATE: dict = {}   # a worker's data, built once per process


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """'NAME:key=value;key=value' -> (NAME, overrides); 'NAME' or 'NAME:' is the preset unchanged."""
    name, _, body = text.partition(":")
    if not name:
        raise SystemExit(f"--variant {text!r}: expected NAME:key=value;key=value")
    overrides = parse_set([kv for kv in body.split(";") if kv.strip()])
    data_keys = [k for k in overrides if k.startswith(("data.", "encoder."))]
    if data_keys:
        raise SystemExit(f"--variant {name}: {', '.join(data_keys)} would change the data; "
                         "use --set for data and encoder keys (every variant shares one dataset)")
    return name, overrides


def train_arm(cfg, samples, tokens, device: torch.device) -> dict:
    """One fit + evaluation of cfg's arm; the metrics of every split, best epoch and seconds."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, samples=samples, tokens=tokens if cfg.model.use_content else None).to(device)
    t0 = time.perf_counter()
    state, ended = fit(model, samples, cfg, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    metrics = evaluate_splits(model, samples, batch_size=cfg.train.eval_batch_size, device=device)
    return {"arm": cfg.model.arm, "seed": cfg.train.seed, "ended": ended, "epochs": state.epoch,
            "best_epoch": state.best_epoch, "fit_seconds": round(seconds, 1),
            **{k: round(v, 4) for k, v in metrics.items()}}


def _load(base, threads: int) -> None:
    """Build (or reuse) this process's dataset, samples and item tokens."""
    if threads:
        torch.set_num_threads(threads)
    if "samples" not in _STATE:
        data = prepare(base)                           # base is the em3 arm: tokens are built
        _STATE.update(raw=data.raw, samples=data.samples, tokens=data.tokens)


def _run(task: tuple) -> dict:
    """One (arm, variant, seed) run in this process."""
    base, threads, device, preset_name, arm, variant, overrides, seed = task
    _load(base, threads)
    cfg = with_overrides(preset(preset_name, arm), {**overrides, "train.seed": seed})
    return {"variant": variant, **train_arm(cfg, _STATE["samples"], _STATE["tokens"], torch.device(device))}


def choose(runs: list[dict], metric: str) -> dict[str, str]:
    """Per arm, the variant whose runs have the best mean `metric` (ties: the first variant given)."""
    best: dict[str, tuple[float, str]] = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        for variant in dict.fromkeys(r["variant"] for r in runs if r["arm"] == arm):
            values = [r[metric] for r in runs if r["arm"] == arm and r["variant"] == variant and metric in r]
            if values and (arm not in best or sum(values) / len(values) > best[arm][0]):
                best[arm] = (sum(values) / len(values), variant)
    return {arm: v for arm, (_, v) in best.items()}


def table(runs: list[dict]) -> str:
    """A plain-text table, one row per run."""
    head = (f"{'arm':<16} {'variant':<10} {'seed':>4} " + " ".join(f"{c:>14}" for c in COLUMNS)
            + f" {'best':>4} {'secs':>7}")
    rows = [f"{r['arm']:<16} {r.get('variant', ''):<10} {r['seed']:>4} "
            + " ".join(f"{r.get(c, float('nan')):>14.4f}" for c in COLUMNS)
            + f" {r['best_epoch']:>4} {r['fit_seconds']:>7.1f}" for r in runs]
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", help="a synthetic preset: tiny, small, demo")
    parser.add_argument("--arms", default="id_only,em3,em3_image_only,em3_text_only")
    parser.add_argument("--seeds", default="0", help="model seeds, comma-separated")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--json-out", default="synthetic_signal.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every arm (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:K=V;K=V",
                        help="a named set of model/train overrides to search over (repeatable; default: the preset)")
    parser.add_argument("--choose-on", default="", metavar="SPLIT/METRIC",
                        help="pick each arm's variant by the mean of this validation metric, e.g. val_cold/auc")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0: torch's default)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at a time, in worker processes")
    args = parser.parse_args(argv)
    overrides = parse_set(args.set)
    arms = [a for a in args.arms.split(",") if a]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    variants = dict(parse_variant(v) for v in args.variant) or {"preset": {}}
    if args.choose_on and not args.choose_on.startswith("val"):
        parser.error(f"--choose-on {args.choose_on!r}: choose on a validation split (val/..., val_cold/...), never test")
    device = resolve_device(args.device)

    base = with_overrides(preset(args.preset), overrides)
    if base.data.source != "synthetic":
        parser.error(f"--preset {args.preset!r} is not a synthetic preset")
    if args.choose_on.startswith("val_cold") and base.data.val_cold_item_frac <= 0:
        parser.error("--choose-on val_cold/...: the preset has no val_cold split; add --set data.val_cold_item_frac=0.1")
    t0 = time.perf_counter()
    threads = args.threads or (1 if args.jobs > 1 else 0)
    _load(base, threads)
    samples = _STATE["samples"]
    report = {"preset": args.preset, "overrides": overrides, "variants": variants, "choose_on": args.choose_on,
              "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "jobs": args.jobs,
              "fingerprint": _STATE["raw"].fingerprint,
              "split_sizes": {k: int(len(v)) for k, v in samples.splits.items()},
              "data_seconds": round(time.perf_counter() - t0, 1), "runs": []}
    out = Path(args.json_out)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}), flush=True)

    tasks = sorted(((base, threads, str(device), args.preset, arm, name, {**overrides, **ov}, seed)
                    for seed in seeds for arm in arms for name, ov in variants.items()),
                   key=lambda t: (COST.get(t[4], 9), t[7]) if args.jobs > 1 else 0)

    def record(result: dict) -> None:
        report["runs"].append(result)
        out.write_text(json.dumps(report, indent=1))   # partial results survive a timeout
        print(json.dumps(result), flush=True)

    if args.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(_run, t) for t in tasks]):
                record(fut.result())
    else:
        for t in tasks:
            record(_run(t))

    runs = sorted(report["runs"], key=lambda r: (arms.index(r["arm"]), list(variants).index(r["variant"]), r["seed"]))
    print(table(runs), flush=True)
    if args.choose_on:
        chosen = choose(runs, args.choose_on)
        report["chosen"] = chosen
        out.write_text(json.dumps(report, indent=1))
        print(f"\nchosen on {args.choose_on} (mean over seeds): "
              + ", ".join(f"{a} -> {v}" for a, v in chosen.items()), flush=True)
        print(table([r for r in runs if chosen.get(r["arm"]) == r["variant"]]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
