"""The speed table: the speed bench's rows as markdown, utilisation against the matmul peak of each row's dtype."""
from __future__ import annotations

from typing import Any, Sequence

from em3.bench.flops import roofline_seconds


def _f(v: Any, fmt: str) -> str:
    return "–" if v is None or v != v else format(v, fmt)


def ratio_to_id_only(row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> float:
    """(train + val) epoch time over the id_only row's at the same batch size (NaN without one)."""
    ref = next((r for r in rows if r["arm"] == "id_only" and r["batch_size"] == row["batch_size"]), None)
    if ref is None:
        return float("nan")
    return (row["train_epoch_s"] + row["val_epoch_s"]) / (ref["train_epoch_s"] + ref["val_epoch_s"])


def utilisation(row: dict[str, Any]) -> float:
    """Achieved FLOP/s of the training step over the measured matmul peak of the dtype its big matmuls run in."""
    return row["achieved_flops_per_s"] / row["peak_bf16" if row["dtype"] == "bf16" else "peak_fp32"]


def roofline_utilisation(row: dict[str, Any]) -> float:
    """The step's ideal time over its measured time: each dtype's FLOPs at that dtype's measured matmul peak
    (a bf16 encoder beside an fp32 ranker is judged against both), per step, over training seconds per step.
    NaN for rows measured before the bench recorded the split."""
    split = row.get("flops_by_dtype")
    if not split:
        return float("nan")
    ideal = roofline_seconds(split, {"fp32": row["peak_fp32"], "bf16": row["peak_bf16"]})
    return ideal * row["steps"] / row["train_epoch_s"]


def _roofline_cell(row: dict[str, Any]) -> str:
    """'20% (67%)': the per-dtype roofline utilisation and the bf16 share of the FLOPs; '–' without a split."""
    u = roofline_utilisation(row)
    if u != u:
        return "–"
    return f"{100 * u:.0f}% ({100 * row['flops_by_dtype'].get('bf16', 0.0) / row['flops_per_step']:.0f}%)"


def render(result: dict[str, Any], *, machine: str, order: Sequence[str]) -> str:
    rows = sorted(result["rows"], key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    lines = [
        f"Command: `{result['command']}`  ",
        f"Machine: {machine}.  ",
        "Each row: one epoch of training (every training sample once, the same seed) and one validation pass, "
        "in a fresh process; `fit()`'s own timers, training and validation apart. GFLOP/step is torch's "
        "FlopCounterMode over forward + backward of the epoch's first batches; GFLOP/s = GFLOP/step × steps / "
        "training seconds; \"% peak\" divides it by a 2048³ matmul of the row's dtype timed in the same "
        "process just before (for bf16 rows only the token store and its projection run in bf16, so the bf16 "
        "peak is the stricter yardstick; the fp32 percentage is given too). \"% per-dtype peaks\": the time the "
        "step's FLOPs would take with each dtype's at that dtype's measured peak (torch's FLOP count split by the "
        "dtype each op computes in; the bf16 share of the FLOPs in brackets), over the measured step time: the "
        "utilisation of a mixed-precision step. Peak memory: the process's RSS, "
        "sampled every 50 ms. ×id_only: (train + val) over the `id_only` row at the same batch size. Top-K s: "
        "the ranking of the catalogue a run ends with (`train.topk_users` users, 0 = every test user), after "
        "that epoch. Val AUC after that one epoch: the quality side of each lever.",
        "",
        "| row | batch | dtype | train s/epoch | val s/epoch | top-K s | ×id_only | samples/s | GFLOP/step | GFLOP/s "
        "| % peak (dtype) | % fp32 peak | % per-dtype peaks (bf16 FLOPs) | peak MB | val AUC (1 epoch) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['batch_size']} | {r['dtype']} | {_f(r['train_epoch_s'], '.1f')} | "
            f"{_f(r['val_epoch_s'], '.2f')} | {_f(r.get('topk_s'), '.1f')} | "
            f"{_f(ratio_to_id_only(r, rows), '.1f')} | {_f(r['samples_per_s'], ',.0f')} | "
            f"{_f(r['flops_per_step'] / 1e9, '.2f')} | {_f(r['achieved_flops_per_s'] / 1e9, '.1f')} | "
            f"{_f(100 * utilisation(r), '.0f')}% of {r['peak_bf16' if r['dtype'] == 'bf16' else 'peak_fp32'] / 1e9:.0f} | "
            f"{_f(100 * r['achieved_flops_per_s'] / r['peak_fp32'], '.0f')}% | "
            f"{_roofline_cell(r)} | "
            f"{_f(r['peak_memory_mb'], ',.0f')} | "
            f"{_f(r['val_auc'], '.4f')} |")
    finished = max((r.get("finished", "") for r in rows), default="")
    lines += ["", f"Last row finished {finished}; {len(rows)} rows."]
    return "\n".join(lines)
