"""The dtype of the frozen token store and its projection: fp32, bf16, or auto (bf16 only where it is native).

bf16 halves the store's memory traffic, but on a CPU without bf16 matmul instructions torch emulates
them: the speed bench measured a 2048³ bf16 matmul at 62 GFLOP/s against 340 in fp32 on an AVX-512 Xeon
without AVX512-BF16 (an em3 epoch 30.7 s in bf16, 23.1 s in fp32), and bf16 24% faster than fp32 on the
AMD EPYC with AVX512-BF16 of session 4. `auto` picks by the CPU's flags.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")   # Linux /proc/cpuinfo names


@functools.lru_cache(maxsize=1)
def native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises bf16 matmul instructions (Linux; False where it cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def resolve_compute_dtype(name: str) -> str:
    """'fp32' or 'bf16' for a `speed.compute_dtype` value ('auto' decided by native_bf16())."""
    if name == "auto":
        return "bf16" if native_bf16() else "fp32"
    if name not in DTYPES:
        raise ValueError(f"speed.compute_dtype: unknown value {name!r}; expected auto, fp32 or bf16")
    return name


def ranker_autocast(name: str) -> contextlib.AbstractContextManager:
    """The context a ranker's forward runs in for a `speed.ranker_dtype` value: CPU bf16 autocast, or nothing.

    Only CPU ops are affected (CUDA runs under train.bf16's own autocast). On a CPU with bf16 matmuls an em3
    MovieLens step took 0.87x the fp32 one this way (scripts/step_ab.py, docs/RESULTS.md)."""
    if resolve_compute_dtype(name) == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
