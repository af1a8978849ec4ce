"""The speed bench's FLOP count split by dtype, and the per-dtype roofline it judges a mixed-precision step by."""
from __future__ import annotations

import math

import pytest
import torch

from em3.bench.flops import count_flops, count_flops_by_dtype, roofline_seconds
from em3.bench.efficiency import mfu_per_dtype
from em3.bench.speed_table import render, roofline_utilisation


def _mixed_step() -> None:
    """A bf16 projection (fwd 2·64·32·16, backward twice that: only the weight and the input need grads),
    an fp32 matmul, and SDPA on the bf16 result cast to fp32."""
    torch.manual_seed(0)
    x = torch.randn(64, 32, requires_grad=True)
    w = torch.randn(32, 16, dtype=torch.bfloat16, requires_grad=True)
    y = (x.bfloat16() @ w).float()                                         # (64, 16)
    z = torch.nn.functional.scaled_dot_product_attention(y[None, None], y[None, None], y[None, None])
    (z.sum() + (x @ x.T).sum()).backward()


def test_the_split_files_each_matmul_under_its_dtype_and_sums_to_torchs_total():
    split = count_flops_by_dtype(_mixed_step)                              # bf16: forward, grad of x, grad of w
    sdpa = 4 * 64 * 64 * 16                                                # QK^T and AV, forward; backward 2.5x
    assert split == {"bf16": 3 * 2 * 64 * 32 * 16, "fp32": 3 * 2 * 64 * 32 * 64 + sdpa + 5 * sdpa // 2}
    assert sum(split.values()) == count_flops(_mixed_step)


def test_sdpa_on_the_cpu_counts_what_its_two_matmuls_would():
    """torch's own counter gives the CPU flash kernel 0 FLOPs; ours matches the explicit q k^T, softmax, w v."""
    q, k, v = (torch.randn(2, 4, 33, 16) for _ in range(3))
    fused = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    explicit = count_flops(lambda: ((q @ k.transpose(-2, -1)) / 4.0).softmax(-1) @ v)
    assert fused == explicit == 2 * (2 * 2 * 4 * 33 * 33 * 16)                 # two matmuls of 2·(B·h)·S·S·d


def test_an_all_fp32_step_has_no_bf16_share():
    a = torch.randn(8, 8, requires_grad=True)
    split = count_flops_by_dtype(lambda: (a @ a).sum().backward())
    assert split == {"fp32": 3 * 2 * 8 ** 3}


def test_roofline_seconds_weights_each_dtype_by_its_own_peak():
    assert roofline_seconds({"fp32": 80e9, "bf16": 180e9}, {"fp32": 80e9, "bf16": 180e9}) == pytest.approx(2.0)
    assert roofline_seconds({"fp32": 0, "bf16": 90e9}, {"fp32": 80e9, "bf16": 180e9}) == pytest.approx(0.5)
    assert math.isnan(roofline_seconds({"bf16": 1.0}, {"fp32": 80e9, "bf16": float("nan")}))   # no bf16 peak measured


def _row(name: str, **kw) -> dict:
    row = {"name": name, "arm": "em3", "batch_size": 1024, "dtype": "bf16", "train_epoch_s": 10.0, "val_epoch_s": 1.0,
           "steps": 100, "samples_per_s": 1.0, "flops_per_step": 3e9, "achieved_flops_per_s": 30e9,
           "peak_fp32": 100e9, "peak_bf16": 200e9, "peak_memory_mb": 1.0, "val_auc": 0.7}
    return {**row, **kw}


def test_the_speed_table_shows_the_per_dtype_roofline_and_marks_rows_without_a_split():
    # 1e9 fp32 FLOPs at 100 GFLOP/s + 2e9 bf16 at 200 = 20 ms ideal a step, against 100 ms measured: 20%
    new = _row("em3", flops_by_dtype={"fp32": 1e9, "bf16": 2e9})
    assert roofline_utilisation(new) == pytest.approx(0.2)
    old = _row("em3, an old row")                                          # measured before the split was kept
    assert math.isnan(roofline_utilisation(old))
    text = render({"command": "c", "rows": [new, old]}, machine="m", order=["em3", "em3, an old row"])
    assert "% per-dtype peaks (bf16 FLOPs)" in text
    assert "| 15% of 200 | 30% | 20% (67%) | 1 | 0.7000 |" in text
    assert "| 15% of 200 | 30% | – | 1 | 0.7000 |" in text


def test_the_efficiency_bench_judges_a_row_by_the_same_roofline():
    result = {"peaks": {"fp32": 100e9, "bf16": 200e9}}
    row = {"step_ms": 100.0, "flops": 3e9, "flops_by_dtype": {"fp32": 1e9, "bf16": 2e9}}
    assert mfu_per_dtype(row, result) == pytest.approx(0.2)                  # 20 ms ideal in a 100 ms step
    assert math.isnan(mfu_per_dtype({"step_ms": 100.0, "flops": 3e9}, result))   # a row from before the split
    assert math.isnan(mfu_per_dtype(row, {"matmul": {}}))                    # a result from before the peaks


def test_dtype_peaks_reuses_a_measured_rate_and_times_bf16_only_where_a_step_runs_it(monkeypatch):
    from em3.bench import flops

    timed: list[str] = []

    def fake(device, *, dtype, **kw):
        timed.append(str(dtype))
        return {"n": 8, "dtype": str(dtype).replace("torch.", ""), "seconds": 1.0, "flops_per_s": 2e9}

    monkeypatch.setattr(flops, "matmul_flops_per_s", fake)
    cpu = torch.device("cpu")
    measured = {"n": 8, "dtype": "float32", "seconds": 1.0, "flops_per_s": 1e9}
    assert flops.dtype_peaks(cpu, "bf16", measured=measured) == {"fp32": 1e9, "bf16": 2e9}
    assert timed == ["torch.bfloat16"]                                      # fp32 was not timed again
    assert flops.dtype_peaks(cpu, "fp32") == {"fp32": 2e9}                  # no emulated bf16 on an fp32 step
