"""The efficiency bench: each history strategy and id_only at each history length L, plus the engineering levers.

One command measures every config, each in a fresh subprocess (em3.bench.probe) so the CPU peak
memory is its own; ratios to id_only at the same L come from the same run. The em3 (lora) step's
FLOPs over its time, against the dense matmul rate measured here, give the model FLOP utilisation.
Each probe runs under a memory cap (em3.bench.memory_limit); a config that outgrows it is a row that
"does not fit", and a larger L of the same variant is then not tried.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch

from em3.bench import efficiency_misfit as misfit
from em3.bench.flops import dtype_peaks, matmul_flops_per_s, roofline_seconds
from em3.bench.memory_limit import address_space_cap, died_of_memory, machine_memory_gb
from em3.bench.runs import GROUP_TAG, KIND_TAG, config_hash
from em3.config import Config, flatten, preset, to_dict, with_arm, with_overrides
from em3.models.precision import resolve_compute_dtype

if TYPE_CHECKING:
    from em3.bench.efficiency_curve import CurveSpec

# name -> (arm, extra overrides, live backbones)
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "id_only": ("id_only", {}, False),
    "precomputed": ("precomputed", {}, False),
    "frozen": ("em3_frozen_history", {}, False),
    "lora": ("em3", {}, False),
    "shared": ("em3_shared_history", {}, False),
    "lora, no dedup": ("em3", {"model.history.dedup": False}, False),
    "lora, live backbones": ("em3", {}, True),
}
QUICK_SYNTHETIC: dict[str, Any] = {"train.batch_size": 64}
# --data choice -> preset: movielens (the benchmark), the tiny synthetic preset (tests), long (L to 1,000)
DATA_PRESETS: dict[str, str] = {"movielens": "movielens", "synthetic": "tiny", "long": "long"}


def base_config(*, data: str, sets: Mapping[str, str], device: str) -> Config:
    if data not in DATA_PRESETS:
        raise ValueError(f"--data {data!r}: expected one of {', '.join(DATA_PRESETS)}")
    cfg = preset(DATA_PRESETS[data])
    cfg = with_overrides(cfg, {**(QUICK_SYNTHETIC if data == "synthetic" else {}), "train.device": device})
    return with_overrides(cfg, dict(sets))


def variant_config(base: Config, name: str, length: int) -> tuple[Config, bool]:
    arm, extra, live = VARIANTS[name]
    return with_overrides(with_arm(base, arm), {"data.max_history": length, **extra}), live


def group_name(base: Config, lengths: Sequence[int]) -> str:
    return f"bench-efficiency-{config_hash({**flatten(base), '__lengths__': sorted(lengths)})[:10]}"


def probe(cfg: Config, *, live: bool, warmup: int, steps: int, timeout_s: float = 1800,
          memory_limit_gb: float = 0.0) -> dict[str, Any]:
    """Measure one config in a fresh Python process; {'error': ...} when it fails, with out_of_memory
    True when it ran out of memory (under the `memory_limit_gb` address-space cap; 0: none; never on CUDA)."""
    spec = json.dumps({"config": to_dict(cfg), "warmup": warmup, "steps": steps, "live_backbones": live})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    cap = memory_limit_gb > 0
    try:
        proc = subprocess.run([sys.executable, "-m", "em3.bench.probe", spec], capture_output=True, text=True,
                              env=env, timeout=timeout_s,
                              preexec_fn=address_space_cap(memory_limit_gb) if cap else None)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")), None)
    if line is not None:             # a measurement, or the probe's own out-of-memory report
        return json.loads(line[len("PROBE "):])
    if proc.returncode == -9:        # SIGKILL: past the cap outside Python's reach, or the kernel's OOM killer
        return {"error": "killed by SIGKILL (the kernel's OOM killer, most likely)", "out_of_memory": True,
                "phase": "?", "alloc_bytes": None}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    if cap and died_of_memory(proc.stderr or ""):   # e.g. a shared library's mmap at import, past the cap
        return {"error": f"out of memory at start-up: {tail[-1] if tail else proc.returncode}",
                "out_of_memory": True, "phase": "start-up", "alloc_bytes": None}
    return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's step time, memory and parameters as a ratio to id_only at the same L (NaN if unknown)."""
    ref = {r["length"]: r for r in rows if r["variant"] == "id_only" and "error" not in r}
    for r in rows:
        base = ref.get(r["length"])
        for key in ("step_ms", "peak_memory_mb", "step_memory_mb", "params_trainable", "params_total", "flops"):
            ok = base is not None and key in r and base.get(key)
            r[f"{key}_x"] = r[key] / base[key] if ok else float("nan")
    return rows


def run_efficiency(*, data: str, quick: bool, sets: Mapping[str, str], lengths: Sequence[int], steps: int,
                   warmup: int, device: str, write: bool, command: str, log: Callable[[str], None] = print,
                   json_out: str = "", variants: Sequence[str] = tuple(VARIANTS), track: bool = True,
                   lever_lengths: Sequence[int] | None = None, memory_limit_gb: float = 0.0,
                   curve: "CurveSpec | None" = None) -> dict:
    """Measure every variant at every L; log to MLflow (one run per config), write the table; returns the results.

    The levers (variants with a comma) are measured only at `lever_lengths` (default: every L). When
    `json_out` already holds rows of the same group and device (an interrupted run), those are kept.
    Each CPU probe runs under a `memory_limit_gb` address-space cap (0: none); a variant that does not fit
    at some L is not tried at a larger one. With `curve` the result is the cost curve
    (em3.bench.efficiency_curve) and is written as its own block.
    """
    base = base_config(data=data, sets=sets, device=device)
    torch_device = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available())
                                else "cpu")
    limit = memory_limit_gb if torch_device.type == "cpu" else 0.0      # CUDA: its own OOM error, no cap
    peak = matmul_flops_per_s(torch_device)
    log(f"dense matmul: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['n']}^3 {peak['dtype']}, {torch_device})")
    peaks = dtype_peaks(torch_device, resolve_compute_dtype(base.speed.compute_dtype), measured=peak)
    rows: list[dict[str, Any]] = []
    group = group_name(base, lengths)
    if json_out and Path(json_out).exists():
        old = json.loads(Path(json_out).read_text())
        if old.get("group") == group and old.get("device") == str(torch_device) and old.get("steps") == steps:
            rows = [r for r in old["rows"] if "error" not in r]
            log(f"resuming {json_out}: {len(rows)} config(s) already measured")
    done = {(r["variant"], r["length"]) for r in rows}
    result = {"group": group, "command": command, "device": str(torch_device),
              "matmul": peak, "peaks": peaks, "steps": steps, "warmup": warmup, "quick": quick, "data": data,
              "base": to_dict(base), "rows": rows, "finished": "", "memory_limit_gb": limit,
              "machine_memory_gb": round(machine_memory_gb(), 1) if limit else 0.0,
              "curve": None if curve is None else asdict(curve)}
    too_big: dict[str, int] = {}      # variant -> the smallest L that did not fit
    for length in lengths:
        for name in variants:
            if (name, length) in done or ("," in name and lever_lengths is not None and length not in lever_lengths):
                continue
            cfg, live = variant_config(base, name, length)
            t0 = time.perf_counter()
            if name in too_big and length > too_big[name]:
                r = {"error": f"not tried: did not fit at L={too_big[name]}", "out_of_memory": True,
                     "phase": "not tried", "alloc_bytes": None}
            else:
                r = probe(cfg, live=live, warmup=warmup, steps=steps, memory_limit_gb=limit)
            r.update(variant=name, length=length, arm=cfg.model.arm, config_hash=config_hash(cfg),
                     matmul_flops_per_s=peak["flops_per_s"])
            rows.append(r)
            if r.get("out_of_memory"):
                too_big[name] = min(too_big.get(name, length), length)
                log(f"  L={length:4d} {name:22s} DOES NOT FIT ({limit:g} GiB cap): {misfit.explain(r, rows, base)}")
            elif "error" in r:
                log(f"  L={length:4d} {name:22s} FAILED: {r['error']}")
            else:
                log(f"  L={length:4d} {name:22s} {r['step_ms']:9.1f} ms/step {r['samples_per_s']:8.0f} samples/s "
                    f"peak {r['peak_memory_mb']:8.0f} MB (+{r['step_memory_mb']:.0f}) {r['flops'] / 1e9:8.2f} GFLOP "
                    f"({time.perf_counter() - t0:.0f} s)")
            add_ratios(rows)
            result["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            if json_out:   # after every config, so a run cut short keeps what it measured
                Path(json_out).write_text(json.dumps(result, indent=1))
    if track:
        log_to_mlflow(result)
    if write:
        write_results(result)
    return result


def mfu_per_dtype(row: dict[str, Any], result: dict[str, Any]) -> float:
    """The step's FLOPs at each dtype's measured peak over its median step time (NaN without the split, e.g.
    a result measured before it was recorded)."""
    split, peaks = row.get("flops_by_dtype"), result.get("peaks")
    if not split or not peaks or not row.get("step_ms"):
        return float("nan")
    return roofline_seconds(split, peaks) / (row["step_ms"] / 1000)


def write_results(result: dict[str, Any], *, machine: str | None = None) -> None:
    """The result into docs/RESULTS.md: the cost curve's own block, or the efficiency table's."""
    if result.get("curve") is not None:
        from em3.bench.efficiency_curve_table import write_results as write
    else:
        from em3.bench.efficiency_table import write_results as write
    write(result, machine=machine)


def log_to_mlflow(result: dict[str, Any]) -> list[str]:
    """One FINISHED MLflow run per measured config (em3.kind=efficiency, one group); returns the run ids."""
    from em3.config import from_dict
    from em3.training.tracking import RunTracker

    base = from_dict(result["base"])
    ids = []
    for r in result["rows"]:
        if "error" in r:
            continue
        cfg, _ = variant_config(base, r["variant"], r["length"])
        tags = {GROUP_TAG: result["group"], KIND_TAG: "efficiency", "em3.bench_variant": r["variant"],
                "em3.history_length": str(r["length"]), "em3.config_hash": r["config_hash"]}
        tracker = RunTracker.start(cfg, tags=tags, run_name=f"eff-{r['variant'].replace(', ', '-')}-L{r['length']}",
                                   device=r.get("device", result["device"]))
        metrics = {f"eff/{k}": float(v) for k, v in r.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "length"}
        metrics["eff/matmul_flops_per_s"] = r.get("matmul_flops_per_s", result["matmul"]["flops_per_s"])
        metrics["eff/mfu"] = r["achieved_flops_per_s"] / metrics["eff/matmul_flops_per_s"]
        metrics["eff/mfu_per_dtype"] = mfu_per_dtype(r, result)
        metrics["params/trainable"], metrics["params/total"] = r["params_trainable"], r["params_total"]
        metrics["perf/samples_per_s"], metrics["perf/peak_memory_mb"] = r["samples_per_s"], r["peak_memory_mb"]
        tracker.metrics({k: v for k, v in metrics.items() if v == v})
        tracker.finish("FINISHED")
        ids.append(tracker.run_id)
    return ids
