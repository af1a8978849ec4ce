"""The process-wide settings a run asks for: the torch thread pool, glibc's large-allocation policy and
deterministic algorithms.

Both are process state, so they are applied once when a run (or a bench probe) starts, from the
run's `speed` config, and reported back so the run can log what it trained with.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

import torch

from em3.config import Config, SpeedConfig, TrainConfig

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def physical_cores() -> int:
    """Physical cores this process may run on (logical CPUs of its affinity mask, halved for SMT siblings)."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or 0
        logical = psutil.cpu_count(logical=True) or 0
    except ImportError:
        physical = logical = 0
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if physical and logical and logical > physical:
        allowed = max(1, allowed * physical // logical)
    return max(1, allowed)


def keep_heap() -> bool:
    """Ask glibc to serve every allocation from the heap and never give freed memory back.

    Without it, each step's large tensors (token gathers, activations) are fresh mmap'd pages,
    and the page faults of zero-filling them cost more than the copies themselves (measured:
    a 98 MB gather 87 ms fresh, 8 ms reused). One arena, so a thread that starts allocating
    after this call (a dashboard job's) uses the same heap: a thread arena maps its large
    blocks afresh whatever the settings. Idempotent. Returns False where it does not apply.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all(libc.mallopt(param, value) == 1 for param, value in
                   ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**30), (M_ARENA_MAX, 1)))
    except (OSError, AttributeError):
        return False


def configure_cpu(speed: SpeedConfig) -> dict[str, str]:
    """Apply `speed.threads` and `speed.keep_heap`; returns what was applied (for the run's tags)."""
    threads = speed.threads or physical_cores()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    heap = keep_heap() if speed.keep_heap else False
    return {"em3.threads": str(torch.get_num_threads()), "em3.keep_heap": str(heap).lower()}


def sigterm_as_interrupt() -> Any:
    """Make SIGTERM (`timeout`, `kill`) raise KeyboardInterrupt like Ctrl-C, so run_training marks the run in
    progress KILLED instead of leaving it RUNNING. Returns the previous handler (None off the main thread,
    where nothing is set)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


def configure_run(cfg: Config) -> dict[str, str]:
    """Every process setting a run asks for (threads, heap, determinism) applied; returns the tags to log,
    with the token store's resolved dtype."""
    from em3.models.precision import resolve_compute_dtype

    return {**configure_cpu(cfg.speed), **configure_determinism(cfg.train, cfg.speed),
            "em3.compute_dtype": resolve_compute_dtype(cfg.speed.compute_dtype),
            "em3.ranker_dtype": resolve_compute_dtype(cfg.speed.ranker_dtype)}


def configure_determinism(train: TrainConfig, speed: SpeedConfig | None = None) -> dict[str, str]:
    """Apply `train.deterministic` (torch.use_deterministic_algorithms, warn-only: an op without a deterministic
    kernel warns instead of failing the run); returns the tag to log. On CUDA, cuBLAS also needs a fixed
    workspace, set here when the environment has not chosen one (it is read when cuBLAS starts).

    Under deterministic algorithms torch also fills every new tensor's memory with NaN before a kernel
    writes it (`torch.utils.deterministic.fill_uninitialized_memory`), a debugging aid that costs a pass
    over each large output; `speed.fill_uninitialized = False` skips it (kernels overwrite what they return).
    """
    if train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(train.deterministic, warn_only=True)
    fill = True if speed is None else speed.fill_uninitialized
    torch.utils.deterministic.fill_uninitialized_memory = fill
    return {"em3.deterministic": str(train.deterministic).lower(),
            "em3.fill_uninitialized": str(train.deterministic and fill).lower()}
