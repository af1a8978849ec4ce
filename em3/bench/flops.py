"""FLOP accounting for the efficiency bench: FLOPs of one training step and the machine's dense matmul FLOP/s."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of `step` (forward + backward), as torch's FlopCounterMode counts them (matmuls, convs, SDPA)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


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
