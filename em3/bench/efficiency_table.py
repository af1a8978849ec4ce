"""The efficiency table: measured rows rendered as markdown (ratios to id_only) plus a log-log figure of cost vs L."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from em3.bench.efficiency import VARIANTS, mfu_per_dtype
from em3.bench.report import IMG_DIR, loglog_chart, machine_line, write_block

SECTION = "## Efficiency"


def _f(v: Any, fmt: str) -> str:
    return "–" if v is None or v != v else format(v, fmt)


def _order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = list(VARIANTS)
    return sorted(rows, key=lambda r: (r["length"], names.index(r["variant"]) if r["variant"] in names else 99))


def _peaks(result: dict[str, Any]) -> str:
    vals = sorted({r.get("matmul_flops_per_s", result["matmul"]["flops_per_s"]) for r in result["rows"]}
                  | ({result["matmul"]["flops_per_s"]} if not result["rows"] else set()))
    return " to ".join(f"{v / 1e9:,.1f}" for v in (vals[0], vals[-1])) if len(vals) > 1 else f"{vals[0] / 1e9:,.1f}"


def _dtype_peaks(result: dict[str, Any]) -> str:
    peaks = result.get("peaks") or {}
    return ", ".join(f"{name} {v / 1e9:,.1f} GFLOP/s" for name, v in peaks.items()) or "not measured"


def _per_dtype_cell(row: dict[str, Any], result: dict[str, Any]) -> str:
    """'25.1% (75%)'; '–' for a row or result measured before the split was recorded."""
    u = mfu_per_dtype(row, result)
    if u != u:
        return "–"
    return f"{u:.1%} ({row['flops_by_dtype'].get('bf16', 0) / row['flops']:.0%})"


def render(result: dict[str, Any], *, machine: str, figures: list[Path]) -> str:
    dev = result["device"]
    mm = result["matmul"]
    mem = "CUDA `max_memory_allocated`" if dev.startswith("cuda") else "CPU RSS (`ru_maxrss`, fresh process per config)"
    lines = [
        f"Command: `{result['command']}`  ",
        f"Machine: {machine}.  ",
        f"Device `{dev}`; {result['warmup']} warm-up + {result['steps']} timed training steps per config (median), "
        f"batch {result['rows'][0].get('batch_size', '?') if result['rows'] else '?'}; each config in a fresh "
        f"process; finished {result['finished']}; MLflow group `{result['group']}` (`em3.kind=efficiency`).  ",
        f"Peak memory: {mem}; \"step MB\" is the growth over the warmed-up model's footprint during the timed "
        "steps. ×id = ratio to `id_only` at the same L (same run). The em3 arm is `lora`; the levers switch "
        "one thing of it: `no dedup` encodes every history slot instead of each unique item once; "
        "`live backbones` runs the frozen MobileNetV2 and text encoder on the step's items every step instead "
        "of reading cached tokens.  ",
        f"Dense matmul on this device: **{_peaks(result)} GFLOP/s** ({mm['n']}³ {mm['dtype']}, timed in the "
        "bench process that measured the row). MFU = FLOPs of the step (torch FlopCounterMode: matmuls, convs, "
        "attention) / step time / that rate. MFU per dtype: the step's FLOPs split by the dtype each op computes "
        f"in, each at that dtype's measured peak ({_dtype_peaks(result)}), over the step time; a mixed-precision "
        "step's utilisation (the bf16 share of the FLOPs in brackets).",
        "",
        "| L | config | step ms | ×id | samples/s | peak MB | step MB | ×id | trainable params | ×id "
        "| total params | GFLOP/step | GFLOP/s | MFU | MFU per dtype (bf16 FLOPs) | unique items/batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in _order(result["rows"]):
        if "error" in r:
            lines.append(f"| {r['length']} | {r['variant']} | failed: {r['error'][:80]} |" + " |" * 14)
            continue
        mfu = r["achieved_flops_per_s"] / r.get("matmul_flops_per_s", mm["flops_per_s"])
        lines.append(
            f"| {r['length']} | {r['variant']} | {_f(r['step_ms'], '.1f')} | {_f(r['step_ms_x'], '.2f')} | "
            f"{_f(r['samples_per_s'], ',.0f')} | {_f(r['peak_memory_mb'], ',.0f')} | {_f(r['step_memory_mb'], ',.0f')} | "
            f"{_f(r['step_memory_mb_x'], '.2f')} | {r['params_trainable']:,} | {_f(r['params_trainable_x'], '.2f')} | "
            f"{r['params_total']:,} | {r['flops'] / 1e9:.2f} | {r['achieved_flops_per_s'] / 1e9:,.1f} | "
            f"{mfu:.2%} | {_per_dtype_cell(r, result)} | {r['unique_items_per_batch']} |")
    for fig in figures:
        lines += ["", f"![{fig.stem}](img/{fig.name})"]
    return "\n".join(lines)


def figures(result: dict[str, Any], *, suffix: str, directory: Path = IMG_DIR) -> list[Path]:
    """Log-log step time, step memory and step FLOPs vs L, one line per config."""
    rows = _order([r for r in result["rows"] if "error" not in r])
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    out = []
    for key, label, name in (("step_ms", "training step time (ms, median)", "time"),
                             ("step_memory_mb", "step memory growth (MB)", "memory"),
                             ("flops", "GFLOP per training step (load-independent)", "flops")):
        scale = 1e-9 if key == "flops" else 1.0
        lines = {v: ([r["length"] for r in rows if r["variant"] == v],
                     [r[key] * scale for r in rows if r["variant"] == v]) for v in variants}
        path = directory / f"bench_efficiency_{name}_{suffix}.png"
        out.append(loglog_chart(lines, path=path, xlabel="history length L", ylabel=label,
                                title=f"Cost vs history length ({result['device']})"))
    return out


def write_results(result: dict[str, Any], *, machine: str | None = None) -> None:
    """Render the result into docs/RESULTS.md (one block per device kind) with its figures."""
    kind = "cuda" if result["device"].startswith("cuda") else "cpu"
    figs = figures(result, suffix=kind)
    body = f"### On {kind.upper()}\n\n" + render(result, machine=machine or machine_line(), figures=figs)
    write_block(body, section=SECTION, name=f"efficiency-{kind}")
