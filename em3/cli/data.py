"""`python -m em3 data`: load a dataset, build its samples (and optionally the feature cache), print a summary."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from em3.config import SOURCES, SYNTHETIC_PRESETS, Config, ConfigError, preset, with_overrides
from em3.errors import EM3Error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m em3 data", description=__doc__)
    p.add_argument("--source", choices=SOURCES, default="synthetic", help="dataset source (default synthetic)")
    p.add_argument("--preset", choices=SYNTHETIC_PRESETS, default="tiny", help="synthetic size (default tiny)")
    p.add_argument("--data-dir", default="", help="movielens-100k or files directory "
                   "(movielens default: $EM3_MOVIELENS_DIR)")
    p.add_argument("--max-history", type=int, default=None, help="history length L (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="split seed (cold draw, synthetic generator)")
    p.add_argument("--summary", action="store_true", help="print the dataset summary (the default action)")
    p.add_argument("--build-cache", action="store_true", help="build (or reuse) the frozen-encoder feature cache")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of text")
    return p


def config_for(args: argparse.Namespace) -> Config:
    """The preset matching the source, with the command-line overrides applied."""
    cfg = preset(args.preset if args.source == "synthetic" else "movielens")
    overrides: dict[str, Any] = {"data.source": args.source}
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    if args.max_history is not None:
        overrides["data.max_history"] = args.max_history
    if args.seed is not None:
        overrides["data.split_seed"] = args.seed
    return with_overrides(cfg, overrides)


def _build_cache(raw: Any, samples: Any, cfg: Config) -> str:
    from em3.data.cache import build_item_tokens   # lazy: pulls in torch and transformers

    t0 = time.perf_counter()
    tokens = build_item_tokens(raw, samples, cfg.encoder, modalities=cfg.model.fusion.modalities)
    seconds = time.perf_counter() - t0
    parts = [f"{m} {tuple(t.tokens.shape)}" + (f" grid {t.grid}" if t.grid else "") + (f", {t.missing} masked"
             if t.missing else "") for m, t in tokens.modalities.items()]
    return f"feature cache  {'; '.join(parts)}; {seconds:.1f} s"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from em3.data.load import load_dataset
        from em3.data.samples import build_samples
        from em3.data.summary import format_summary, summarize

        cfg = config_for(args)
        t0 = time.perf_counter()
        raw = load_dataset(cfg.data)
        t1 = time.perf_counter()
        samples = build_samples(raw, cfg.data)
        t2 = time.perf_counter()
        if args.summary or not args.build_cache:
            stats = summarize(raw, samples)
            stats["seconds"] = {"load": round(t1 - t0, 3), "samples": round(t2 - t1, 3),
                                "images": round(time.perf_counter() - t2, 3)}
            if args.json:
                print(json.dumps(stats, indent=2))
            else:
                print(format_summary(stats))
                s = stats["seconds"]
                print(f"time           load {s['load']:.2f} s, samples {s['samples']:.2f} s, "
                      f"image scan {s['images']:.2f} s")
        if args.build_cache:
            print(_build_cache(raw, samples, cfg))
    except (EM3Error, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
