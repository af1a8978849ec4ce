"""The memory cap of a bench probe: an address-space limit on its process, and the errors that limit raises.

A probe that outgrows the machine should fail its allocation, not swap or be OOM-killed, so the bench
can report "does not fit" and go on. Linux enforces no RSS limit (RLIMIT_RSS is ignored), so the cap is
RLIMIT_AS: virtual address space, which runs ahead of RSS by the mapped feature cache, shared libraries
and the allocator's reservations (a probe needs about 1.5 GB of it for its imports: under a 1 GiB cap
scipy fails to map a segment), so a config fails slightly before its RSS would reach the cap. CUDA reserves far more address space than it uses, so no cap is set for a CUDA probe;
there the GPU's own out-of-memory error is the signal.
"""
from __future__ import annotations

import re
import resource
from pathlib import Path
from typing import Callable

DEFAULT_SHARE = 0.75      # of MemTotal: leaves the OS, the bench process and a neighbour room
_UNITS = {"b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
# torch CPU: "DefaultCPUAllocator: can't allocate memory: you tried to allocate 4000000000 bytes";
# torch CUDA: "CUDA out of memory. Tried to allocate 2.00 GiB"; numpy: "Unable to allocate 4.47 GiB for an array"
_ALLOC = (re.compile(r"tried to allocate (\d+) bytes", re.I),
          re.compile(r"(?:tried to allocate|unable to allocate) ([\d.]+) ?(B|KiB|MiB|GiB|TiB)", re.I))
_OOM_TEXT = ("can't allocate memory", "not enough memory", "out of memory", "unable to allocate")
# what a process that hit the cap prints when it dies before it can report (a shared library's mmap at import)
_DIED_TEXT = ("failed to map segment", "cannot allocate memory", "memoryerror")


def machine_memory_gb(meminfo: Path = Path("/proc/meminfo")) -> float:
    """MemTotal of this machine in GiB (read from /proc/meminfo)."""
    try:
        line = next(ln for ln in meminfo.read_text().splitlines() if ln.startswith("MemTotal:"))
    except (OSError, StopIteration) as exc:
        raise ValueError(f"{meminfo}: no MemTotal line ({exc}); pass --memory-limit-gb explicitly") from exc
    return int(line.split()[1]) / 2**20          # kB -> GiB


def default_limit_gb(*, share: float = DEFAULT_SHARE, meminfo: Path = Path("/proc/meminfo")) -> float:
    """The default cap: `share` of this machine's MemTotal, in GiB."""
    return round(share * machine_memory_gb(meminfo), 1)


def address_space_cap(limit_gb: float) -> Callable[[], None]:
    """A subprocess preexec_fn that caps the child's address space (RLIMIT_AS soft limit) at `limit_gb` GiB."""
    if limit_gb <= 0:
        raise ValueError(f"memory limit {limit_gb} GiB: expected > 0 (0 means no cap: pass no preexec_fn)")
    limit = int(limit_gb * 2**30)

    def cap() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))

    return cap


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the errors a failed allocation raises: MemoryError, torch's CPU/CUDA allocator RuntimeErrors."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in _OOM_TEXT)


def allocation_bytes(message: str) -> int | None:
    """The size of the allocation that failed, parsed from its error message; None when it names none."""
    m = _ALLOC[0].search(message)
    if m:
        return int(m.group(1))
    m = _ALLOC[1].search(message)
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()]) if m else None


def died_of_memory(stderr: str) -> bool:
    """True when a process's error output says it died for want of memory before it could report."""
    return any(t in stderr.lower() for t in _DIED_TEXT + _OOM_TEXT)
