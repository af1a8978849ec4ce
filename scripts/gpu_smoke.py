"""GPU smoke run: bf16 training of the tiny and MovieLens presets, with timings, as JSON.

Drives the library's own pieces (data, feature cache, model, fit, evaluation) without MLflow,
so it runs on a bare CUDA machine that has torch/transformers/peft/pandas but no mlflow:

    python scripts/gpu_smoke.py --out gpu_smoke.json [--movielens DIR] [--epochs 3]

MovieLens needs EM3_MOVIELENS_DIR (or --movielens), EM3_IMAGE_ENCODER and EM3_TEXT_ENCODER.
Every figure is measured in this one process; compare them as ratios (bf16 vs fp32, arm vs id_only).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from em3.config import preset, with_overrides  # noqa: E402
from em3.data.cache import build_item_tokens  # noqa: E402
from em3.data.load import load_dataset  # noqa: E402
from em3.data.samples import build_samples  # noqa: E402
from em3.evaluation.evaluate import evaluate_splits  # noqa: E402
from em3.models.em3 import build_model  # noqa: E402
from em3.training.fit import fit  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_once(cfg, raw, samples, tokens, device: torch.device) -> dict:
    """One fit + evaluation; seconds, samples/s and peak memory of this arm alone."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, samples=samples, tokens=tokens if cfg.model.use_content else None).to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    state, ended = fit(model, samples, cfg, device=device)
    sync(device)
    seconds = time.perf_counter() - t0
    metrics = evaluate_splits(model, samples, batch_size=cfg.train.eval_batch_size, device=device)
    return {
        "arm": cfg.model.arm, "ranker": cfg.model.ranker.kind, "bf16": cfg.train.bf16 and device.type == "cuda",
        "epochs": state.epoch, "best_epoch": state.best_epoch, "ended": ended,
        "fit_seconds": round(seconds, 2), "train_seconds": round(state.train_seconds, 2),
        "samples_per_s": round(state.samples_seen / max(state.train_seconds, 1e-9), 1),
        "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        **{k: round(v, 4) for k, v in metrics.items()},
    }


def run_preset(name: str, runs: list[tuple[str, str, bool]], *, epochs: int, device: torch.device,
               extra: dict | None = None, on_result=None) -> dict:
    base = with_overrides(preset(name), {"train.epochs": epochs, "train.patience": 0, **(extra or {})})
    t0 = time.perf_counter()
    raw = load_dataset(base.data)
    samples = build_samples(raw, base.data)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = build_item_tokens(raw, samples, base.encoder, progress=False)
    t_cache = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_item_tokens(raw, samples, base.encoder, progress=False)
    t_cache_hit = time.perf_counter() - t0
    out = {"preset": name, "data_seconds": round(t_data, 2), "cache_build_seconds": round(t_cache, 2),
           "cache_hit_seconds": round(t_cache_hit, 3), "train_samples": int(len(samples.splits["train"])),
           "runs": []}
    for arm, ranker, bf16 in runs:
        cfg = with_overrides(preset(name, arm), {"train.epochs": epochs, "train.patience": 0,
                                                 "model.ranker.kind": ranker, "train.bf16": bf16, **(extra or {})})
        result = train_once(cfg, raw, samples, tokens, device)
        print(json.dumps(result), flush=True)
        out["runs"].append(result)
        if on_result is not None:
            on_result()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="gpu_smoke.json")
    parser.add_argument("--movielens", default=os.environ.get("EM3_MOVIELENS_DIR", ""))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer runs (for a short GPU lease)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "presets": []}
    print(json.dumps(report), flush=True)
    save = lambda: Path(args.out).write_text(json.dumps(report, indent=1))  # noqa: E731 - partial results survive a timeout
    tiny_runs = [("em3", "din", True), ("em3", "din", False), ("id_only", "din", True), ("em3", "dcnv2", True)]
    ml_runs = [("em3", "din", True), ("em3", "din", False), ("id_only", "din", True), ("precomputed", "din", True),
               ("em3_shared_history", "din", True), ("em3", "dcnv2", True)]
    if args.quick:
        tiny_runs, ml_runs = tiny_runs[:1], ml_runs[:3]
    report["presets"].append(run_preset("tiny", tiny_runs, epochs=args.epochs, device=device, on_result=save))
    save()
    if args.movielens:
        os.environ["EM3_MOVIELENS_DIR"] = str(Path(args.movielens).resolve())
        report["presets"].append({"preset": "movielens", "runs": []})
        report["presets"][-1] = run_preset("movielens", ml_runs, epochs=args.epochs, device=device,
                                           extra={"train.batch_size": 1024}, on_result=save)
        save()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
