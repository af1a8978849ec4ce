"""The hyper-parameter search of the quality bench: one small grid, the same for every arm, judged on validation.

Every (arm, ranker) gets exactly the same budget: the grid's points at seed 0, each trained
with early stopping on validation AUC (which also picks the epoch count). The point with the
best `val/auc` becomes that (arm, ranker)'s setting for every seed. Test metrics are never read
here.
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

from em3.config import ConfigError, flatten

# The default grid (documented in docs/RESULTS.md): the two learning rates, the knobs most likely
# to differ between an ID-only ranker and a content arm. Override with --grid.
DEFAULT_GRID: dict[str, tuple[str, ...]] = {
    "train.lr_ranker": ("2e-3", "4e-3"),     # around the movielens preset's 2e-3 (batch 1024)
    "train.lr_content": ("2e-3",),
}


def parse_grid(items: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """`--grid key=v1,v2` strings -> {key: (v1, v2)}; keys are checked against the config by grid_points."""
    grid: dict[str, tuple[str, ...]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r}: expected key=v1,v2,...")
        key, values = item.split("=", 1)
        vals = tuple(v.strip() for v in values.split(",") if v.strip())
        if not vals:
            raise ConfigError(f"--grid {item!r}: no values")
        grid[key.strip()] = vals
    return grid


def grid_points(grid: Mapping[str, Sequence[str]], *, known: Mapping[str, Any]) -> list[dict[str, str]]:
    """The grid's points as override dicts (cartesian product, in a stable order); [{}] for an empty grid."""
    for key in grid:
        if key not in known:
            raise ConfigError(f"--grid {key}: unknown config key")
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def pick_best(candidates: Sequence[tuple[dict[str, str], float]]) -> dict[str, str] | None:
    """The overrides with the highest validation AUC (first wins ties); None when none has a finite AUC."""
    best, best_auc = None, float("-inf")
    for point, auc in candidates:
        if auc == auc and auc > best_auc:   # NaN-safe
            best, best_auc = point, auc
    return best


def describe_grid(grid: Mapping[str, Sequence[str]]) -> str:
    """One line for the table notes, e.g. `train.lr_content ∈ {1e-3} × train.lr_ranker ∈ {1e-3, 3e-3}`."""
    if not grid:
        return "no grid (defaults; epochs by early stopping on val AUC)"
    return " × ".join(f"`{k}` ∈ {{{', '.join(v)}}}" for k, v in sorted(grid.items()))


def known_keys(cfg: Any) -> dict[str, Any]:
    return flatten(cfg)
