"""Checkpoint faults: truncated, bit-flipped, swapped or malicious files are refused naming the path; a crash
while writing leaves the previous good checkpoint loadable."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from em3.errors import CacheError
from em3.training import checkpoint
from em3.training.fit import FitState
from tests.reliability.fs_audit import FsAudit

pytestmark = pytest.mark.reliability


def _write_good(directory: Path, *, epoch: int = 1, value: float = 1.0) -> dict[str, torch.Tensor]:
    weights = {"w": torch.full((64, 64), value), "b": torch.arange(64, dtype=torch.float32)}
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))]).state_dict()
    state = FitState(epoch=epoch, global_step=10 * epoch, best_auc=0.6, best_epoch=epoch, best_weights=weights)
    checkpoint.save_resume(directory, model_state=weights, optimizer_state=opt, state=state)
    return weights


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EM3_EVIL_MARKER']}",))


@pytest.mark.parametrize("fault", ["truncate", "flip_byte", "empty", "other_file", "no_sidecar"])
def test_a_damaged_checkpoint_is_refused_naming_its_path(tmp_path: Path, fault: str):
    _write_good(tmp_path)
    path = tmp_path / checkpoint.RESUME
    data = path.read_bytes()
    if fault == "truncate":
        path.write_bytes(data[: len(data) - 200])
    elif fault == "flip_byte":
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes([data[mid] ^ 0x01]) + data[mid + 1:])
    elif fault == "empty":
        path.write_bytes(b"")
    elif fault == "other_file":                  # best.pt copied over last.pt: a valid file, the wrong one
        path.write_bytes((tmp_path / checkpoint.BEST).read_bytes())
    else:
        (tmp_path / (checkpoint.RESUME + ".json")).unlink()
    with pytest.raises(CacheError, match=str(tmp_path)):
        checkpoint.load_resume(tmp_path)


def test_a_malicious_pickle_is_never_executed_even_with_a_matching_checksum(tmp_path: Path, monkeypatch):
    """An attacker who rewrites the checkpoint AND its sidecar still cannot run code: weights_only=True."""
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EM3_EVIL_MARKER", str(marker))
    checkpoint.save({"model": _Evil()}, tmp_path / checkpoint.BEST)   # the sidecar now matches the evil file
    with FsAudit() as audit:
        with pytest.raises(CacheError, match=rf"{tmp_path / checkpoint.BEST}: checkpoint could not be read"):
            checkpoint.load_best(tmp_path)
    assert not marker.exists() and audit.writes == []


@pytest.mark.parametrize("crash_at", ["torch.save", "sidecar", "file_rename"])
def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch, crash_at: str):
    good = _write_good(tmp_path, epoch=1, value=1.0)
    if crash_at == "torch.save":
        real = torch.save

        def half_save(obj, f, *args, **kwargs):          # writes half a file, then the process "dies"
            real(obj, f, *args, **kwargs)
            Path(f).write_bytes(Path(f).read_bytes()[:100])
            raise KeyboardInterrupt("killed mid-write")
        monkeypatch.setattr(checkpoint.torch, "save", half_save)
    else:
        real_replace = os.replace

        suffix = ".json" if crash_at == "sidecar" else ".pt"

        def crash_on_sidecar(src, dst):
            if str(dst).endswith(suffix):
                raise KeyboardInterrupt("killed between the file and its sidecar")
            return real_replace(src, dst)
        monkeypatch.setattr(checkpoint.os, "replace", crash_on_sidecar)
    with pytest.raises(KeyboardInterrupt):
        _write_good(tmp_path, epoch=2, value=2.0)
    monkeypatch.undo()
    weights, _, state = checkpoint.load_resume(tmp_path)     # the epoch-1 checkpoint, intact and accepted
    assert state.epoch == 1 and torch.equal(weights["w"], good["w"])
    assert torch.equal(checkpoint.load_best(tmp_path)["w"], good["w"])
