"""Where and why a variant stops fitting in memory: its smaller L's peaks extrapolated, the failed allocation named.

Works on the efficiency bench's rows (dicts, as em3.bench.efficiency writes them): a measured row has
peak_memory_mb and step_memory_mb; a row that did not fit has out_of_memory, the phase it failed in and,
when the error said, alloc_bytes. Shape letters: N samples, B batch, L history length, D content size,
H DIN attention hidden size, T tokens per item, U unique items of a batch.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from em3.config import Config

MATCH = 2.0          # an allocation "is" a modelled tensor within this factor (dtype and padding slack)


def measured(rows: Sequence[dict[str, Any]], variant: str, *, below: int | None = None) -> list[dict[str, Any]]:
    """The variant's measured rows (below L = `below` if given), by L."""
    out = [r for r in rows if r["variant"] == variant and "error" not in r and (below is None or r["length"] < below)]
    return sorted(out, key=lambda r: r["length"])


def slope(points: Sequence[tuple[int, float]]) -> float | None:
    """MB per unit of L through the last two (L, MB) points; None with fewer than two."""
    if len(points) < 2 or points[-1][0] == points[-2][0]:
        return None
    (l1, m1), (l2, m2) = points[-2], points[-1]
    return (m2 - m1) / (l2 - l1)


def extrapolate(points: Sequence[tuple[int, float]], length: int) -> float | None:
    """MB at `length`, linear in L through the last two points; None with fewer than two."""
    s = slope(points)
    return None if s is None else points[-1][1] + s * (length - points[-1][0])


def cap_length(points: Sequence[tuple[int, float]], cap_mb: float) -> float | None:
    """The L where the linear extrapolation reaches `cap_mb`; None when the peak does not grow with L."""
    s = slope(points)
    return None if s is None or s <= 0 else points[-1][0] + (cap_mb - points[-1][1]) / s


def candidate_tensors(base: Config, *, length: int, num_samples: int = 0, tokens_per_item: int = 0,
                      unique_items: int = 0) -> dict[str, int]:
    """Bytes of the tensors that grow with L (fp32 activations, int64 indices), by description."""
    b, d = base.train.batch_size, max(base.model.fusion.dim, base.model.ranker.id_dim)
    h = max(base.model.ranker.attention_hidden or (1,))
    out = {f"a (B, L, D) history embedding (B = {b}, D = {d})": b * length * d * 4,
           f"a (B, L, H) DIN attention hidden (H = {h})": b * length * h * 4,
           "a (B, L, 4·D) DIN attention input": b * length * 4 * d * 4}
    if num_samples:
        out[f"the samples' (N, L) int64 history (N = {num_samples:,}), built before the model"] = num_samples * length * 8
    if tokens_per_item:
        out[f"the (B·L, T, D) token gather of every history slot (T = {tokens_per_item})"] = \
            b * length * tokens_per_item * base.model.fusion.dim * 4
        if unique_items:
            out[f"the (U, T, D) token gather of the batch's unique items (U ≈ {unique_items:,})"] = \
                unique_items * tokens_per_item * base.model.fusion.dim * 4
    return out


def match(alloc: int, candidates: dict[str, int]) -> str | None:
    """The candidate closest to `alloc` bytes in log scale, if within a factor MATCH."""
    best = min(candidates, key=lambda k: abs(math.log(candidates[k] / alloc)), default=None)
    return best if best is not None and abs(math.log(candidates[best] / alloc)) <= math.log(MATCH) else None


def _known(rows: Sequence[dict[str, Any]], key: str) -> int:
    return max((int(r.get(key, 0) or 0) for r in rows if "error" not in r), default=0)


def explain(row: dict[str, Any], rows: Sequence[dict[str, Any]], base: Config) -> str:
    """One sentence on a row that did not fit: the last L that did, the extrapolated need, the failed tensor."""
    if row.get("phase") == "not tried":
        return row["error"]
    length, fit = row["length"], measured(rows, row["variant"], below=row["length"])
    parts = []
    if fit:
        parts.append(f"the last L that fit, {fit[-1]['length']}, peaked at {fit[-1]['peak_memory_mb']:,.0f} MB")
        need = extrapolate([(r["length"], r["peak_memory_mb"]) for r in fit], length)
        grow_step = slope([(r["length"], r["step_memory_mb"]) for r in fit])
        grow_base = slope([(r["length"], r["peak_memory_mb"] - r["step_memory_mb"]) for r in fit])
        if need is not None and grow_step is not None and grow_base is not None:
            part = "the step's activations" if grow_step > grow_base else "the data and model held before the step"
            parts.append(f"linear in L it would peak near {need / 1024:,.1f} GB, growing mostly in {part} "
                         f"(+{max(grow_step, grow_base) * 100:,.0f} MB per 100 L)")
    else:
        parts.append("no smaller L of it fit")
    alloc = row.get("alloc_bytes")
    where = f"it failed in {row.get('phase', '?')}"
    if alloc:
        cands = candidate_tensors(base, length=length, num_samples=_known(rows, "num_samples"),
                                  tokens_per_item=_known(rows, "tokens_per_item"),
                                  unique_items=max((r.get("unique_items_per_batch", 0) for r in fit), default=0))
        hit = match(alloc, cands)
        where += f" allocating {alloc / 2**20:,.0f} MB" + (f", the size of {hit}" if hit else
                                                          " (none of the modelled L-sized tensors)")
    elif "SIGKILL" in row.get("error", ""):
        where = "it was killed (SIGKILL) before Python could report an allocation"
    return "; ".join(parts + [where])


def stop_statement(variant: str, rows: Sequence[dict[str, Any]], base: Config, *, cap_gb: float) -> str:
    """Where the variant stops fitting under the cap, and why, in one sentence."""
    failed = sorted((r for r in rows if r["variant"] == variant and r.get("out_of_memory")), key=lambda r: r["length"])
    if failed:
        return f"stops fitting at L = {failed[0]['length']}: {explain(failed[0], rows, base)}."
    fit = measured(rows, variant)
    if not fit:
        return "no L measured."
    top = fit[-1]
    text = f"fits at every L measured (peak {top['peak_memory_mb']:,.0f} MB at L = {top['length']}"
    if cap_gb <= 0:
        return text + "; no memory cap was set)."
    at = cap_length([(r["length"], r["peak_memory_mb"]) for r in fit], cap_gb * 1024)
    if at is None:
        return text + f", of the {cap_gb:g} GiB cap; its peak does not grow with L here)."
    return text + f", of the {cap_gb:g} GiB cap); linear in L from its last two points it would reach the cap " \
                  f"near L ≈ {at:,.0f}."
