"""Atomically published directories with a checksummed manifest (feature caches, checkpoints).

A directory is written under a temporary sibling name, described by `manifest.json` (size,
sha256 and, for .npy files, shape and dtype of every file), then renamed into place in one
step: a reader sees the whole directory or none of it, and `verify_manifest` catches any later
truncation or edit.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from em3.errors import CacheError

MANIFEST = "manifest.json"
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


def sha256_file(path: Path, *, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _npy_header(path: Path) -> tuple[list[int], str]:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)  # maps, reads nothing; a short file raises
    return list(arr.shape), arr.dtype.str


def describe_file(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file (+ shape and dtype of a .npy)."""
    entry: dict[str, Any] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    if path.suffix == ".npy":
        entry["shape"], entry["dtype"] = _npy_header(path)
    return entry


def write_manifest(directory: Path, *, meta: dict[str, Any]) -> dict[str, Any]:
    """Describe every file of `directory` (flat) into its manifest.json; returns the manifest."""
    files = {p.name: describe_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    body = json.loads(json.dumps({"meta": meta, "files": files}))
    manifest = {**body, "sha256": _digest(body)}
    path = directory / MANIFEST
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return manifest


def verify_manifest(directory: Path, *, checksums: bool = True) -> dict[str, Any]:
    """The manifest's meta if every listed file is present and intact; else CacheError naming the file."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files, meta = manifest["files"], manifest["meta"]
        intact = manifest["sha256"] == _digest({"meta": meta, "files": files})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheError(f"{path}: missing or unreadable manifest ({exc})") from exc
    if not intact:
        raise CacheError(f"{path}: the manifest's own sha256 does not match (edited)")
    for name, entry in files.items():
        f = directory / name
        try:
            size = f.stat().st_size
        except OSError:
            raise CacheError(f"{f}: listed in the manifest but missing") from None
        if size != entry.get("bytes"):
            raise CacheError(f"{f}: {size} bytes, the manifest says {entry.get('bytes')} (truncated or rewritten)")
        if "shape" in entry:
            try:
                shape, dtype = _npy_header(f)
            except (OSError, ValueError) as exc:
                raise CacheError(f"{f}: unreadable .npy header ({exc})") from exc
            if shape != entry["shape"] or dtype != entry["dtype"]:
                raise CacheError(f"{f}: shape {shape} {dtype}, the manifest says {entry['shape']} {entry['dtype']}")
        if checksums and sha256_file(f) != entry.get("sha256"):
            raise CacheError(f"{f}: sha256 differs from the manifest (corrupt or edited)")
    return meta


def new_temp_dir(final: Path) -> Path:
    """An empty temporary sibling of `final`, named with this process id (see clean_stale_temps)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TEMP_PREFIX}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def publish(tmp: Path, final: Path) -> bool:
    """Rename the finished `tmp` to `final` in one step; False (and tmp removed) if another writer won."""
    try:
        os.rename(tmp, final)
        return True
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def discard(directory: Path) -> None:
    """Remove a directory: first renamed aside (one atomic step, so readers never see half of it)."""
    if not directory.exists():
        return
    trash = directory.parent / f"{TRASH_PREFIX}{directory.name}-{uuid.uuid4().hex[:8]}"
    os.rename(directory, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(root: Path) -> list[Path]:
    """Remove leftovers of writers that died mid-write (temp dirs of dead pids, trash); returns them."""
    removed = []
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        if p.name.startswith(TRASH_PREFIX):
            stale = True
        elif p.name.startswith(TEMP_PREFIX):
            try:
                stale = not _pid_alive(int(p.name.rsplit("-", 2)[-2]))
            except (ValueError, IndexError):
                stale = True
        else:
            continue
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
