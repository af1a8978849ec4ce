"""The cost curve: the five history strategies at L up to 1,000, the efficiency bench's configs for issue 15.

One bench run (em3.bench.efficiency, `--curve`) measures `CURVE_VARIANTS` x `CURVE_LENGTHS` with ratios
to id_only at the same L. An L longer than any user's positives only adds padding, so the default
lengths stop at the longest history the data holds (MovieLens-100K: 378).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from em3.config import Config, with_overrides

CURVE_VARIANTS: tuple[str, ...] = ("id_only", "precomputed", "frozen", "lora", "shared")
CURVE_LENGTHS: tuple[int, ...] = (50, 200, 500, 1000)
QUICK_LENGTHS: tuple[int, ...] = (5, 10)


@dataclass(frozen=True)
class CurveSpec:
    longest_history: int            # the most positives of one user: no history is longer
    requested: tuple[int, ...]      # the lengths asked for, before capping at longest_history
    lengths: tuple[int, ...]        # the lengths measured


def longest_history(base: Config) -> int:
    """The most positives one user of `base`'s data has: an upper bound on any sample's history length."""
    from em3.data.load import load_dataset
    from em3.data.samples import build_samples

    cfg = with_overrides(base, {"data.max_history": 1})      # the histories are not needed, only the labels
    samples = build_samples(load_dataset(cfg.data), cfg.data)
    positives = np.bincount(samples.user[samples.label > 0.5], minlength=samples.num_users)
    return int(positives.max(initial=0))


def cap_lengths(requested: Sequence[int], longest: int) -> tuple[int, ...]:
    """The requested lengths with those past `longest` replaced by it (once), ascending."""
    if not requested or min(requested) < 1:
        raise ValueError(f"curve lengths {list(requested)}: expected one or more lengths >= 1")
    if longest < 1:
        raise ValueError(f"longest history {longest}: the data has no user with a positive, so no curve")
    return tuple(sorted({min(int(v), longest) for v in requested}))


def curve_spec(base: Config, *, requested: Sequence[int] | None, quick: bool,
               longest: int | None = None) -> CurveSpec:
    """The curve's lengths: `requested` as given, else the defaults capped at the data's longest history."""
    longest = longest_history(base) if longest is None else longest
    if requested:
        return CurveSpec(longest_history=longest, requested=tuple(requested), lengths=tuple(requested))
    default = QUICK_LENGTHS if quick else CURVE_LENGTHS
    return CurveSpec(longest_history=longest, requested=default, lengths=cap_lengths(default, longest))
