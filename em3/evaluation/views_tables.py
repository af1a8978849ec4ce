"""Tables the dashboard shows: mean ± std per arm with deltas against a baseline arm, parameter diffs."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

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


def param_diff(params: Mapping[str, Mapping[str, str]]) -> pd.DataFrame:
    """Parameters that differ between runs: rows = parameter, columns = run label ('' = not logged)."""
    keys = sorted(set().union(*[p.keys() for p in params.values()])) if params else []
    table = pd.DataFrame({run: [p.get(k, "") for k in keys] for run, p in params.items()}, index=keys)
    if table.empty:
        return table
    differs = table.nunique(axis=1) > 1
    return table[differs]
