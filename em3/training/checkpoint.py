"""Checkpoint files: the best weights and the resume state, written atomically and verified on load.

Each `<name>.pt` has a sidecar `<name>.pt.json` with its size and sha256; a mismatch on
load raises CacheError naming the path. Files are read with `torch.load(weights_only=True)`
so a checkpoint can never run code.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from em3.errors import CacheError
from em3.training.fit import FitState

BEST = "best.pt"
RESUME = "last.pt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(obj: dict[str, Any], path: Path) -> Path:
    """torch.save to a temp file, then os.replace (atomic), then write the size/sha256 sidecar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    meta: dict[str, Any] = {"size": tmp.stat().st_size, "sha256": _sha256(tmp)}
    side = path.with_name(path.name + ".json")
    # The sidecar also accepts the file it replaces and is written first: a crash between the two renames
    # (or an artifact copy that stops between the two files) leaves a pair that still verifies.
    old = _read_meta(side) if path.is_file() else None
    if old is not None:
        meta["previous"] = [{"size": old.get("size"), "sha256": old.get("sha256")}]
    tmp_side = side.with_name(side.name + f".tmp{os.getpid()}")
    tmp_side.write_text(json.dumps(meta))
    os.replace(tmp_side, side)
    os.replace(tmp, path)
    return path


def _read_meta(side: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def load(path: Path) -> dict[str, Any]:
    """Verify size and sha256 against the sidecar, then torch.load(weights_only=True)."""
    path = Path(path)
    side = path.with_name(path.name + ".json")
    if not path.is_file():
        raise CacheError(f"{path}: checkpoint file is missing")
    meta = _read_meta(side)
    if meta is None:
        raise CacheError(f"{side}: checkpoint checksum file is missing or unreadable")
    size = path.stat().st_size
    digest = _sha256(path)
    accepted = [meta, *(m for m in meta.get("previous", []) if isinstance(m, dict))]
    if not any(size == m.get("size") and digest == m.get("sha256") for m in accepted):
        raise CacheError(f"{path}: checkpoint is corrupt or truncated (size {size}, expected {meta.get('size')}; "
                         "sha256 mismatch)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CacheError(f"{path}: checkpoint could not be read ({type(e).__name__}: {e})") from None


def rng_state() -> dict[str, torch.Tensor]:
    """RNG states as tensors (weights_only-loadable)."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return out


def set_rng_state(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(states["cuda"]))


def save_resume(directory: Path, *, model_state: dict[str, torch.Tensor], optimizer_state: dict,
                state: FitState) -> Path:
    """Write last.pt (resume state) and, when the epoch was the best so far, best.pt."""
    save({
        "model": model_state,
        "optimizer": optimizer_state,
        "epoch": state.epoch,
        "global_step": state.global_step,
        "best_auc": float(state.best_auc),
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "train_seconds": float(state.train_seconds),
        "val_seconds": float(state.val_seconds),
        "samples_seen": state.samples_seen,
        "best_weights": state.best_weights,
        "rng": rng_state(),
    }, directory / RESUME)
    if state.best_epoch == state.epoch and state.best_weights is not None:
        save({"model": state.best_weights, "epoch": state.best_epoch, "val_auc": float(state.best_auc)},
             directory / BEST)
    return directory / RESUME


def load_resume(directory: Path) -> tuple[dict[str, torch.Tensor], dict, FitState]:
    """(model state, optimizer state, FitState) from last.pt; RNG states restored."""
    ckpt = load(Path(directory) / RESUME)
    set_rng_state(ckpt["rng"])
    state = FitState(epoch=ckpt["epoch"], global_step=ckpt["global_step"], best_auc=ckpt["best_auc"],
                     best_epoch=ckpt["best_epoch"], bad_epochs=ckpt["bad_epochs"],
                     train_seconds=ckpt["train_seconds"], val_seconds=ckpt.get("val_seconds", 0.0),
                     samples_seen=ckpt["samples_seen"],
                     best_weights=ckpt["best_weights"])
    return ckpt["model"], ckpt["optimizer"], state


def load_best(directory: Path) -> dict[str, torch.Tensor]:
    """The best model weights from best.pt."""
    return load(Path(directory) / BEST)["model"]
