"""FLOP accounting for the efficiency bench: FLOPs of one training step and the machine's dense matmul FLOP/s."""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _cpu_flash_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                             **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# torch 2.13's FlopCounterMode has formulas for the CUDA SDPA kernels but not the CPU one, so SDPA on the CPU
# counted 0 FLOPs (the bench's rows with the attention fold off read too few GFLOP/step): the same formulas.
CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flop,
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward_flop}


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of `step` (forward + backward), as torch's FlopCounterMode counts them (matmuls, convs,
    SDPA, the CPU kernel included)."""
    return sum(count_flops_by_dtype(step).values())


DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


def _first_tensor(out: object) -> torch.Tensor | None:
    """An op's output, or the first tensor of a tuple/list of outputs (SDPA returns several)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((t for t in map(_first_tensor, out) if t is not None), None)
    return None


class _DtypeFlopCounter(FlopCounterMode):
    """FlopCounterMode that also files each counted op's FLOPs under the dtype it computes in (its output's)."""

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=CPU_SDPA)
        self.by_dtype: dict[str, int] = defaultdict(int)

    def _count_flops(self, func_packet, out, args, kwargs):     # torch's per-op hook (torch/utils/flop_counter.py)
        counts = self.flop_counts["Global"]                      # what get_total_flops sums
        before = counts[func_packet]
        result = super()._count_flops(func_packet, out, args, kwargs)
        if counts[func_packet] != before:
            first = _first_tensor(out)
            name = DTYPE_NAMES.get(first.dtype, str(first.dtype)) if first is not None else "unknown"
            self.by_dtype[name] += int(counts[func_packet] - before)
        return result


def count_flops_by_dtype(step: Callable[[], None]) -> dict[str, int]:
    """`count_flops` split by the dtype each op computes in: {'fp32': n, 'bf16': m, ...}; the values sum to
    FlopCounterMode's total (a mixed-precision step's matmuls run at different peaks)."""
    counter = _DtypeFlopCounter()
    with counter:
        step()
    total = int(counter.get_total_flops())
    split = dict(counter.by_dtype)
    if sum(split.values()) != total:     # torch stopped calling the hook: say so rather than report a wrong split
        raise RuntimeError(f"count_flops_by_dtype: the dtype split {split} does not sum to the total {total}")
    return split


def roofline_seconds(flops_by_dtype: dict[str, float], peaks: dict[str, float]) -> float:
    """Seconds the given FLOPs would take if each dtype's ran at its measured matmul peak (FLOP/s):
    a mixed-precision step's ideal time, the yardstick its "% of peak" divides by. NaN where a dtype
    with FLOPs has no measured peak."""
    total = 0.0
    for name, n in flops_by_dtype.items():
        peak = peaks.get(name, float("nan"))
        if n and not peak > 0:
            return float("nan")
        total += n / peak if n else 0.0
    return total


def dtype_peaks(device: torch.device, compute_dtype: str, *, measured: dict | None = None) -> dict[str, float]:
    """The matmul rate (`matmul_flops_per_s`) of fp32 and, where a step can run it, bf16: the per-dtype yardstick
    of a mixed-precision step (`roofline_seconds`). `compute_dtype` is the resolved speed.compute_dtype; a rate
    already `measured` (one of `matmul_flops_per_s`'s results) is reused, not timed again. Emulated bf16 (a CPU
    without bf16 matmuls) is not timed: it took minutes on session 9's EPYC, and no step runs it there."""
    names = [("fp32", torch.float32)]
    if device.type == "cuda" or compute_dtype == "bf16":
        names.append(("bf16", torch.bfloat16))
    have = {measured["dtype"]: measured["flops_per_s"]} if measured else {}
    return {name: have.get(str(dt).replace("torch.", "")) or matmul_flops_per_s(device, dtype=dt)["flops_per_s"]
            for name, dt in names}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_s(device: torch.device, *, n: int = 0, dtype: torch.dtype | None = None, repeats: int = 5) -> dict:
    """The machine's measured dense matmul rate: median over `repeats` timed (n x n) @ (n x n) products.

    Defaults: n = 2048 float32 on CPU, n = 8192 bfloat16 on CUDA (the training step's autocast dtype).
    """
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": sec, "flops_per_s": 2 * n ** 3 / sec}
