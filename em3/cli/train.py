"""`python -m em3 train`: train one arm on a dataset, log it to MLflow, optionally print a JSON result line.

Config resolution: preset (by --data/--preset) → --config YAML (merged, strict keys) → --arm →
--ranker/--seed/--data-dir → --set key=value. Under torchrun only rank 0 prints.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from em3.config import ARMS, RANKERS, SOURCES, SYNTHETIC_PRESETS, Config, ConfigError, field_help, from_dict, \
    parse_set, preset, to_dict, with_arm, with_overrides
from em3.errors import EM3Error

SPLITS = ("val", "val_cold", "test", "test_cold")


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The flags train and ablate share."""
    p.add_argument("--data", choices=SOURCES, default="synthetic", help="dataset source (default synthetic)")
    p.add_argument("--preset", choices=SYNTHETIC_PRESETS, default="tiny", help="synthetic size (default tiny)")
    p.add_argument("--data-dir", default="", help="movielens-100k or files directory")
    p.add_argument("--config", default="", help="YAML file of config values (nested like config.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set model.fusion.num_queries=4 (repeatable)")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def base_config(args: argparse.Namespace) -> Config:
    """Preset + YAML file + --data-dir (no arm, ranker, seed or --set yet)."""
    cfg = preset(args.preset if args.data == "synthetic" else "movielens")
    if args.data != "synthetic":
        cfg = with_overrides(cfg, {"data.source": args.data})
    if args.config:
        import yaml

        path = Path(args.config)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"--config {path}: cannot read it ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--config {path}: expected a mapping at the top level")
        cfg = from_dict(_merge(to_dict(cfg), data))
    if args.data_dir:
        cfg = with_overrides(cfg, {"data.data_dir": args.data_dir})
    return cfg


def finish_config(cfg: Config, *, arm: str, ranker: str | None, seed: int | None, overrides: list[str]) -> Config:
    """Apply the arm, ranker, seed and --set overrides, in that order."""
    cfg = with_arm(cfg, arm)
    extra: dict[str, Any] = {}
    if ranker:
        extra["model.ranker.kind"] = ranker
    if seed is not None:
        extra["train.seed"] = seed
    extra.update(parse_set(overrides))
    return with_overrides(cfg, extra)


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def result_json(result: Any) -> dict[str, Any]:
    """The --json line: run id, status, per-split metrics, train seconds, peak memory."""
    out: dict[str, Any] = {"run_id": result.run_id, "status": result.status}
    for split in SPLITS:
        found = {k.split("/", 1)[1]: _clean(v) for k, v in result.metrics.items() if k.startswith(split + "/")}
        if found or split != "val_cold":                  # val_cold only where the data has one
            out[split] = found
    out["train_seconds"] = _clean(result.train_seconds)
    out["peak_memory_mb"] = _clean(result.peak_memory_mb)
    out["error"] = result.error
    return out


def config_yaml(cfg: Config) -> str:
    """The resolved config as YAML that `--config` reads back (nested like config.json), each field followed
    by its help as a comment: what `--print-config` prints."""
    import yaml

    def emit(node: dict[str, Any], prefix: str, indent: str) -> list[str]:
        lines = []
        for key, value in node.items():
            if isinstance(value, dict):
                lines += [f"{indent}{key}:", *emit(value, f"{prefix}{key}.", indent + "  ")]
                continue
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            text = text.removesuffix("\n...").strip()                       # a bare scalar's document end marker
            help_text = " ".join(field_help(prefix + key).split())
            lines.append(f"{indent}{key}: {text}" + (f"  # {help_text}" if help_text else ""))
        return lines

    return "\n".join(emit(to_dict(cfg), "", "")) + "\n"


def progress_bar():
    """(Hooks, close) drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    from em3.training.hooks import Hooks

    bar = tqdm(total=0, file=sys.stderr, unit="step", dynamic_ncols=True)

    def on_progress(p: Any) -> None:
        if p.phase == "train":
            if bar.total != p.steps_per_epoch * p.epochs:
                bar.reset(total=p.steps_per_epoch * p.epochs)
            bar.n = (p.epoch - 1) * p.steps_per_epoch + p.step
            bar.set_description(f"epoch {p.epoch}/{p.epochs}")
            bar.set_postfix(loss=f"{p.loss:.4f}", sps=f"{p.samples_per_s:.0f}")
            bar.refresh()
        else:
            bar.set_description(p.phase)
            if p.message:
                bar.write(f"[{p.phase}] {p.message}", file=sys.stderr)

    return Hooks(on_progress=on_progress), bar.close


def format_result(result: Any) -> str:
    lines = [f"run {result.run_id}: {result.status}  ({result.train_seconds:.1f} s training, "
             f"peak {result.peak_memory_mb:.0f} MB)"]
    for split in SPLITS:
        parts = [f"{k.split('/', 1)[1]} {v:.4f}" for k, v in result.metrics.items() if k.startswith(split + "/")]
        if parts or split != "val_cold":
            lines.append(f"  {split:<9} " + "  ".join(parts))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m em3 train", description=__doc__)
    add_config_args(p)
    p.add_argument("--arm", default="em3", help=f"named variant: {', '.join(ARMS)} (default em3)")
    p.add_argument("--ranker", choices=RANKERS, default=None, help="ranker (default: the config's, din)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: the config's, 0)")
    p.add_argument("--run-name", default=None, help="MLflow run name")
    p.add_argument("--resume", default="", metavar="RUN_ID", help="continue a run from its last checkpoint (its id, or a unique prefix)")
    p.add_argument("--json", action="store_true", help="print one last line of JSON with the results")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML (each field's help as a comment) and exit without "
                        "training; edit it and pass it back with --config")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")   # keep stderr for our own messages
    rank0 = os.environ.get("RANK", "0") == "0"
    try:
        cfg = finish_config(base_config(args), arm=args.arm, ranker=args.ranker, seed=args.seed,
                            overrides=args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(config_yaml(cfg))
        return 0
    from em3.training.run import run_training   # lazy: torch and mlflow are slow to import
    from em3.training.runtime import sigterm_as_interrupt
    from em3.training.tracking import resolve_run_id

    sigterm_as_interrupt()                              # a terminated run is marked KILLED, not left RUNNING
    hooks, close = progress_bar() if (rank0 and not args.json) else (None, lambda: None)
    try:
        resume = resolve_run_id(args.resume) if args.resume else None       # a dashboard short id works too
        result = run_training(cfg, hooks=hooks, run_name=args.run_name, resume_run_id=resume)
    except (EM3Error, ConfigError) as e:
        close()
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        close()
        print("interrupted: the run is marked KILLED", file=sys.stderr)
        return 130
    close()
    if rank0:
        print(json.dumps(result_json(result)) if args.json else format_result(result))
    return 0 if result.status == "FINISHED" else 1
