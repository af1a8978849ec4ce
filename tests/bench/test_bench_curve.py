"""The cost curve (efficiency bench --curve): its configs, ratios within a run, rows that do not fit, the figure.

The probe is faked here (no subprocess, no training): these tests are the spec of the bookkeeping; the
measuring itself is covered by tests/bench/test_bench_quick.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from em3.bench import efficiency, efficiency_curve, efficiency_misfit, memory_limit, probe
from em3.bench.cli import efficiency_main
from em3.bench.efficiency_curve import CURVE_VARIANTS, CurveSpec, cap_lengths, curve_spec, longest_history
from em3.bench.efficiency_curve_table import figure, render
from em3.data.synthetic import generate

N = 10_000          # samples the fake data has
COST = {"id_only": 1.0, "precomputed": 2.0, "em3_frozen_history": 4.0, "em3": 5.0, "em3_shared_history": 6.0}


def fake_probe(calls: list, *, oom: tuple[str, int] = ("em3_shared_history", 500)):
    """A probe whose step time and memory grow linearly in L, a factor per arm; `oom` runs out of memory."""
    def run(cfg, *, live, warmup, steps, memory_limit_gb=0.0, timeout_s=0):
        arm, length = cfg.model.arm, cfg.data.max_history
        calls.append((arm, length, memory_limit_gb))
        if (arm, length) == oom:
            return {"error": "out of memory in data: Unable to allocate", "out_of_memory": True, "phase": "data",
                    "alloc_bytes": N * length * 8}
        c = COST[arm]
        return {"step_ms": c * length, "samples_per_s": 1.0, "peak_memory_mb": 100 + c * length,
                "step_memory_mb": c * length / 2, "params_trainable": int(10 * c), "params_total": int(10 * c),
                "flops": c * length * 1e9, "achieved_flops_per_s": 1e9, "history_params_trainable": 0,
                "batch_size": 64, "unique_items_per_batch": 150, "num_samples": N, "history_fill": 0.5,
                "tokens_per_item": 0 if arm == "id_only" else 8}
    return run


@pytest.fixture
def curve_result(monkeypatch) -> tuple[dict, list]:
    calls: list = []
    monkeypatch.setattr(efficiency, "probe", fake_probe(calls))
    monkeypatch.setattr(efficiency, "matmul_flops_per_s", lambda device, **kw: {"n": 8, "dtype": "float32",
                                                                                "seconds": 1.0, "flops_per_s": 1e9})
    spec = CurveSpec(longest_history=2000, requested=(50, 200, 500, 1000), lengths=(50, 200, 500, 1000))
    result = efficiency.run_efficiency(data="synthetic", quick=False, sets={}, lengths=spec.lengths, steps=1,
                                       warmup=0, device="cpu", write=False, command="c", log=lambda s: None,
                                       variants=CURVE_VARIANTS, track=False, memory_limit_gb=4.0, curve=spec)
    return result, calls


def test_curve_lengths_stop_at_the_longest_history():
    assert cap_lengths((50, 200, 500, 1000), 378) == (50, 200, 378)
    assert cap_lengths((1000, 50), 5000) == (50, 1000)
    spec = curve_spec(None, requested=None, quick=False, longest=378)
    assert spec.lengths == (50, 200, 378) and spec.requested == (50, 200, 500, 1000)
    assert curve_spec(None, requested=(500,), quick=False, longest=378).lengths == (500,)   # asked for: kept
    with pytest.raises(ValueError, match="no user with a positive"):
        cap_lengths((50,), 0)


def test_longest_history_is_the_most_positives_of_one_user():
    base = efficiency.base_config(data="synthetic", sets={}, device="cpu")
    inter = generate("tiny", 0).interactions
    assert longest_history(base) == int(inter[inter["label"] > 0.5].groupby("user_id").size().max())


def test_curve_measures_five_strategies_by_lengths_with_ratios_to_id_only(curve_result):
    result, calls = curve_result
    rows = {(r["variant"], r["length"]): r for r in result["rows"]}
    assert set(rows) == {(v, n) for v in CURVE_VARIANTS for n in (50, 200, 500, 1000)}
    assert rows[("lora", 200)]["step_ms_x"] == 5.0 and rows[("id_only", 200)]["step_ms_x"] == 1.0
    assert rows[("frozen", 1000)]["flops_x"] == 4.0 and rows[("precomputed", 50)]["params_trainable_x"] == 2.0
    assert rows[("lora", 50)]["peak_memory_mb_x"] == pytest.approx((100 + 250) / 150)
    # shared ran out of memory at 500, so 1000 was not tried; every probe ran under the cap
    assert rows[("shared", 500)]["out_of_memory"] and rows[("shared", 1000)]["phase"] == "not tried"
    assert ("em3_shared_history", 1000, 4.0) not in calls and len(calls) == 19
    assert {lim for _, _, lim in calls} == {4.0}
    assert tuple(result["curve"]["lengths"]) == (50, 200, 500, 1000) and result["memory_limit_gb"] == 4.0
    json.dumps(result)      # a --json-out file


def test_a_row_that_does_not_fit_says_why_and_what_the_last_fit_used(curve_result, tmp_path: Path):
    result, _ = curve_result
    base = efficiency.base_config(data="synthetic", sets={}, device="cpu")
    row = next(r for r in result["rows"] if (r["variant"], r["length"]) == ("shared", 500))
    why = efficiency_misfit.explain(row, result["rows"], base)
    assert "the last L that fit, 200, peaked at 1,300 MB" in why
    assert "peak near 3.0 GB" in why                      # 100 + 6 * 500 MB, linear from L = 50, 200
    assert f"the samples' (N, L) int64 history (N = {N:,})" in why and "failed in data" in why
    md = render(result, machine="m", figure=figure(result, path=tmp_path / "curve.png"))
    assert md.count("**does not fit**") == 2 and "last fit: L = 200 at 1,300 MB" in md
    assert "- `shared` stops fitting at L = 500" in md and "- `lora` fits at every L measured" in md
    assert "![curve](img/curve.png)" in md and (tmp_path / "curve.png").stat().st_size > 10_000
    assert md.count("\n| 1000 |") == 5


def test_misfit_arithmetic():
    pts = [(200, 1000.0), (500, 2500.0)]
    assert efficiency_misfit.slope(pts) == 5.0 and efficiency_misfit.extrapolate(pts, 1000) == 5000.0
    assert efficiency_misfit.cap_length(pts, 10240.0) == 2048.0
    assert efficiency_misfit.cap_length([(200, 9.0), (500, 9.0)], 100.0) is None
    assert efficiency_misfit.match(1000, {"a": 1900, "b": 100}) == "a"
    assert efficiency_misfit.match(1000, {"a": 2100}) is None


def test_probe_reports_running_out_of_memory_as_a_row(monkeypatch, capsys):
    def oom(spec, *, progress):
        progress["phase"] = "timed steps"
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 4000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(probe, "measure", oom)
    assert probe.main(["{}"]) == 3
    out = json.loads(capsys.readouterr().out.split("PROBE ", 1)[1])
    assert out["out_of_memory"] and out["phase"] == "timed steps" and out["alloc_bytes"] == 4_000_000_000

    def bug(spec, *, progress):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(probe, "measure", bug)
    with pytest.raises(RuntimeError, match="shapes"):          # not a memory error: the probe crashes loudly
        probe.main(["{}"])


def test_the_address_space_cap_turns_a_big_allocation_into_a_memory_error(tmp_path: Path):
    cap = memory_limit.address_space_cap(1.0)
    big = subprocess.run([sys.executable, "-c", "bytearray(3 * 2**30)"], preexec_fn=cap, capture_output=True, text=True)
    assert big.returncode == 1 and "MemoryError" in big.stderr
    small = subprocess.run([sys.executable, "-c", "bytearray(10**6)"], preexec_fn=cap, capture_output=True)
    assert small.returncode == 0
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683568 kB\nMemFree:  1 kB\n")
    assert memory_limit.default_limit_gb(meminfo=meminfo) == pytest.approx(0.75 * 24683568 / 2**20, abs=0.05)
    assert memory_limit.allocation_bytes("Unable to allocate 4.47 GiB for an array with shape (600000, 1000)") \
        == int(4.47 * 2**30)
    assert memory_limit.is_out_of_memory(MemoryError()) and not memory_limit.is_out_of_memory(RuntimeError("x"))


def test_cli_curve_defaults(monkeypatch):
    seen: dict = {}
    monkeypatch.setattr(efficiency, "run_efficiency", lambda **kw: seen.update(kw))
    monkeypatch.setattr(efficiency_curve, "longest_history", lambda base: 378)
    assert efficiency_main(["--curve", "--no-write", "--no-track", "--memory-limit-gb", "3"]) == 0
    assert seen["lengths"] == (50, 200, 378) and seen["variants"] == CURVE_VARIANTS
    assert seen["memory_limit_gb"] == 3.0 and seen["curve"].longest_history == 378
    monkeypatch.setattr(efficiency_curve, "longest_history", lambda base: 2385)
    assert efficiency_main(["--curve", "--data", "long", "--no-write", "--memory-limit-gb", "0"]) == 0
    assert seen["lengths"] == (50, 200, 500, 1000) and seen["data"] == "long" and seen["memory_limit_gb"] == 0.0
    assert efficiency_main(["--curve", "--memory-limit-gb", "-1"]) == 2
    assert np.isfinite(memory_limit.default_limit_gb())
