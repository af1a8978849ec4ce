"""A file-system audit via `sys.addaudithook`: which paths a block of code opened for writing, created or removed.

Python's audit events (`open`, `os.mkdir`, `os.rename`, `os.remove`, `shutil.rmtree`, ...) fire for
every file operation made from Python, including pandas' and PIL's. The hook is installed once
per process (hooks cannot be removed) and only records while a `FsAudit` block is active on
the current thread.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.truncate",
                 "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.symlink", "os.link", "os.chmod"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_local = threading.local()
_installed = False


def _hook(event: str, args: tuple) -> None:
    rec = getattr(_local, "record", None)
    if rec is None:
        return
    if event == "open" and args:
        path, mode, flags = (list(args) + [None, None])[:3]
        if not isinstance(path, (str, bytes, os.PathLike)):
            return   # an fd
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                  (isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
        (rec.writes if writing else rec.reads).append(os.fsdecode(path))
    elif event in _WRITE_EVENTS and args:
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)):
                rec.writes.append(os.fsdecode(a))


class FsAudit:
    """`with FsAudit() as a:` ... then `a.writes_outside(root)` / `a.reads_outside(root)`."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.writes: list[str] = []

    def __enter__(self) -> "FsAudit":
        global _installed
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True
        _local.record = self
        return self

    def __exit__(self, *exc: object) -> None:
        _local.record = None

    @staticmethod
    def _outside(paths: list[str], root: Path, *, ignore: tuple[str, ...] = ()) -> list[str]:
        root_s = str(Path(root).resolve())
        out = []
        for p in paths:
            full = os.path.abspath(p)
            if full == root_s or full.startswith(root_s + os.sep):
                continue
            if any(full.startswith(i) for i in ignore):
                continue
            out.append(full)
        return out

    def writes_outside(self, root: Path) -> list[str]:
        return self._outside(self.writes, root)

    def reads_outside(self, root: Path) -> list[str]:
        """Data files read outside root (the interpreter's own libraries and /proc, /sys, /dev excluded)."""
        ignore = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix, "/proc", "/sys", "/dev", "/usr/lib",
                        "/usr/share/zoneinfo", "/etc/localtime", "/usr/local/lib"})
        return [p for p in self._outside(self.reads, root, ignore=ignore) if not p.endswith((".py", ".pyc", ".so"))]
