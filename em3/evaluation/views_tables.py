"""Tables the dashboard shows: mean ± std per arm with deltas against a baseline arm, parameter diffs, efficiency."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

NOT_LOGGED = "not logged"
# (row label, metric, format) of the Runs page's efficiency panel, read from what a run logged
EFFICIENCY: tuple[tuple[str, str, str], ...] = (
    ("Trainable parameters", "params/trainable", "count"),
    ("Total parameters", "params/total", "count"),
    ("History-path trainable parameters", "params/history_trainable", "count"),
    ("Train seconds / epoch", "time/train_seconds_per_epoch", "seconds"),
    ("Validation seconds / epoch", "time/val_seconds_per_epoch", "seconds"),
    ("Training samples / s", "perf/samples_per_s", "rate"),
    ("Peak memory", "perf/peak_memory_mb", "memory"),
)
# Where a run's time went, in the order it is spent (em3/training/run.py's timers). The process's start-up
# (imports) is not timed by the run.
TIME_PARTS: tuple[tuple[str, str], ...] = (
    ("setup: data, cache, model", "time/setup_seconds"),
    ("training", "time/train_seconds"),
    ("validation", "time/val_seconds"),
    ("per-epoch extras", "time/epoch_end_seconds"),
    ("final evaluation", "time/eval_seconds"),
    ("top-K ranking", "time/topk_seconds"),
    ("explain artifacts", "time/explain_seconds"),
)
ABLATION_METRICS = ("test/auc", "test/gauc", "test/logloss", "test_cold/auc", "test_cold/gauc", "test_cold/logloss")


def group_summary(runs: pd.DataFrame, *, metrics: Sequence[str] = ABLATION_METRICS, by: str = "arm",
                  baseline: str = "em3") -> pd.DataFrame:
    """One row per arm: n, and per metric mean, std (ddof=1; NaN for one run) and Δ = mean − baseline mean.

    runs: one row per finished run with column `by` and the metric columns (NaN = not logged).
    Columns: `n`, then `<metric> mean`, `<metric> std`, `<metric> Δ` in the order of `metrics`.
    """
    if runs.empty:
        return pd.DataFrame(columns=["n"])
    rows = {}
    for arm, part in runs.groupby(by, sort=True):
        row: dict[str, float] = {"n": float(len(part))}
        for m in metrics:
            vals = part[m].astype(float).dropna().to_numpy() if m in part else np.array([])
            row[f"{m} mean"] = float(vals.mean()) if len(vals) else np.nan
            row[f"{m} std"] = float(vals.std(ddof=1)) if len(vals) > 1 else np.nan
        rows[arm] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = by
    for m in metrics:
        base = out.loc[baseline, f"{m} mean"] if baseline in out.index else np.nan
        out[f"{m} Δ"] = out[f"{m} mean"] - base
    order = ["n"] + [f"{m} {s}" for m in metrics for s in ("mean", "std", "Δ")]
    out["n"] = out["n"].astype(int)
    return out[order]


def arm_summary(runs: pd.DataFrame, *, metrics: Sequence[str] = ABLATION_METRICS,
                baseline: str = "em3") -> pd.DataFrame:
    """group_summary by `arm_label` (custom runs apart from their base arm), split by `ranker` when runs mix rankers.

    With several rankers a row is 'arm · ranker' and Δ is against the baseline arm of the same ranker.
    """
    rankers = sorted(runs["ranker"].unique(), key=lambda r: (r != "din", r)) if "ranker" in runs else []
    if len(rankers) <= 1:
        out = group_summary(runs, metrics=metrics, by="arm_label", baseline=baseline)
        out.index.name = "arm"
        return out
    parts = []
    for ranker in rankers:
        part = group_summary(runs[runs["ranker"] == ranker], metrics=metrics, by="arm_label", baseline=baseline)
        part.index = [f"{arm} · {ranker}" for arm in part.index]
        parts.append(part)
    out = pd.concat(parts)
    out.index.name = "arm · ranker"
    return out


def format_summary(summary: pd.DataFrame, *, metrics: Sequence[str] = ABLATION_METRICS, digits: int = 4) -> pd.DataFrame:
    """Display strings: '0.7123 ± 0.0040' and '+0.0031' per metric (std omitted for a single run)."""
    out = pd.DataFrame(index=summary.index)
    out["n"] = summary["n"] if "n" in summary else 0
    for m in metrics:
        if f"{m} mean" not in summary:
            continue
        mean, std, delta = summary[f"{m} mean"], summary[f"{m} std"], summary[f"{m} Δ"]
        out[m] = [("–" if np.isnan(a) else f"{a:.{digits}f}" + ("" if np.isnan(s) else f" ± {s:.{digits}f}"))
                  for a, s in zip(mean, std)]
        out[f"Δ {m}"] = ["–" if np.isnan(d) else f"{d:+.{digits}f}" for d in delta]
    return out


def metric_text(value: float) -> str:
    """One final metric as the Runs page shows it: counts as integers with separators (params/*, best_epoch),
    large figures to one decimal (MB, samples/s, seconds), the rest (AUC, loss, recall) to 4 decimals;
    "—" for a metric the run did not log."""
    v = float(value)
    if not np.isfinite(v):
        return "—"
    if v.is_integer() and abs(v) >= 1:
        return f"{int(v):,}"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4f}"


def param_diff(params: Mapping[str, Mapping[str, str]]) -> pd.DataFrame:
    """Parameters that differ between runs: rows = parameter, columns = run label ('' = not logged)."""
    keys = sorted(set().union(*[p.keys() for p in params.values()])) if params else []
    table = pd.DataFrame({run: [p.get(k, "") for k in keys] for run, p in params.items()}, index=keys)
    if table.empty:
        return table
    differs = table.nunique(axis=1) > 1
    return table[differs]


def efficiency_column(metrics: Mapping[str, float], tags: Mapping[str, str]) -> dict[str, str]:
    """One run's efficiency figures as display strings ('not logged' for what an older run lacks).

    Peak memory says what was measured (tag em3.memory_kind: CUDA allocator peak, process RSS …);
    the trainable count also gives its share of the total.
    """
    out: dict[str, str] = {}
    for label, key, kind in EFFICIENCY:
        value = metrics.get(key)
        if value is None:
            out[label] = NOT_LOGGED
        elif kind == "count":
            out[label] = f"{int(value):,}"
        elif kind == "seconds":
            out[label] = f"{value:.2f} s"
        elif kind == "rate":
            out[label] = f"{value:,.0f}"
        else:
            out[label] = f"{value:,.1f} MiB ({tags.get('em3.memory_kind') or 'kind not logged'})"
    total = metrics.get("params/total")
    if total and metrics.get("params/trainable") is not None:
        out["Trainable parameters"] += f" ({metrics['params/trainable'] / total:.1%} of {int(total):,})"
    out["Device"] = tags.get("em3.device") or NOT_LOGGED
    return out


def time_parts(metrics: Mapping[str, float]) -> dict[str, float]:
    """{part: seconds} of TIME_PARTS that the run logged, in order; {} for a run that logged none
    (running, failed, or from before the timers)."""
    return {part: float(metrics[key]) for part, key in TIME_PARTS if metrics.get(key) is not None}
