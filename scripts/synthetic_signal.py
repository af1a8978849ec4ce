"""Does item content beat IDs on cold items? Train arms on a synthetic preset and compare, as JSON.

Drives the library's own pieces (data, feature cache, model, fit, evaluation) without MLflow, like
scripts/gpu_smoke.py, so it runs on a bare CUDA machine:

    python scripts/synthetic_signal.py --preset demo --arms id_only,em3,em3_image_only,em3_text_only \
        --seeds 0,1 --device auto --json-out synthetic_signal.json [--set train.epochs=8]

`--seeds` are model seeds (train.seed: initialisation, shuffling, dropout); the data and the cold
items stay those of data.split_seed. Prints one line per run and a final table; the JSON is
rewritten after every run, so a timeout keeps the finished ones. docs/notes/synthetic_signal.md
has the measured numbers.
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
from em3.data.cache import build_item_tokens  # noqa: E402
from em3.data.load import load_dataset  # noqa: E402
from em3.data.samples import build_samples  # noqa: E402
from em3.evaluation.evaluate import evaluate_splits  # noqa: E402
from em3.models.em3 import build_model  # noqa: E402
from em3.training.distributed import resolve_device  # noqa: E402
from em3.training.fit import fit  # noqa: E402

COLUMNS = ("test/auc", "test_cold/auc", "test_cold/gauc", "val/auc")


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


def table(runs: list[dict]) -> str:
    """A plain-text table, one row per run."""
    head = f"{'arm':<16} {'seed':>4} " + " ".join(f"{c:>14}" for c in COLUMNS) + f" {'best':>4} {'secs':>7}"
    rows = [f"{r['arm']:<16} {r['seed']:>4} " + " ".join(f"{r.get(c, float('nan')):>14.4f}" for c in COLUMNS)
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
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = parse_set(args.set)
    arms = [a for a in args.arms.split(",") if a]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    device = resolve_device(args.device)

    base = with_overrides(preset(args.preset), overrides)
    if base.data.source != "synthetic":
        parser.error(f"--preset {args.preset!r} is not a synthetic preset")
    t0 = time.perf_counter()
    raw = load_dataset(base.data)
    samples = build_samples(raw, base.data)
    tokens = build_item_tokens(raw, samples, base.encoder, progress=False)
    report = {"preset": args.preset, "overrides": overrides, "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "fingerprint": raw.fingerprint,
              "split_sizes": {k: int(len(v)) for k, v in samples.splits.items()},
              "data_seconds": round(time.perf_counter() - t0, 1), "runs": []}
    out = Path(args.json_out)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}), flush=True)
    for seed in seeds:
        for arm in arms:
            cfg = with_overrides(preset(args.preset, arm), {**overrides, "train.seed": seed})
            result = train_arm(cfg, samples, tokens, device)
            report["runs"].append(result)
            out.write_text(json.dumps(report, indent=1))   # partial results survive a timeout
            print(json.dumps(result), flush=True)
    print(table(report["runs"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
