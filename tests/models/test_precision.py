"""speed.compute_dtype = auto: bf16 only where the CPU has bf16 matmuls (emulated bf16 was slower than fp32)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from em3.config import preset, with_overrides
from em3.models import precision


def _cpuinfo(tmp_path: Path, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: fpu sse2 avx2 {flags}\n\nprocessor\t: 1\n")
    return str(path)


@pytest.mark.parametrize("flags, native", [("avx512f avx512_bf16", True), ("amx_bf16 amx_tile", True),
                                           ("avx512f avx512_vnni", False), ("", False)])
def test_native_bf16_reads_the_cpus_flags(tmp_path, flags, native):
    precision.native_bf16.cache_clear()
    try:
        assert precision.native_bf16(_cpuinfo(tmp_path, flags)) is native
    finally:
        precision.native_bf16.cache_clear()
    assert precision.native_bf16(str(tmp_path / "absent")) is False


def test_auto_follows_the_cpu_and_explicit_values_are_kept(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    assert precision.resolve_compute_dtype("auto") == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    assert precision.resolve_compute_dtype("auto") == "fp32"
    assert precision.resolve_compute_dtype("bf16") == "bf16" and precision.resolve_compute_dtype("fp32") == "fp32"
    with pytest.raises(ValueError, match="speed.compute_dtype"):
        precision.resolve_compute_dtype("fp16")


def test_the_token_store_takes_the_resolved_dtype(monkeypatch):
    from em3.data.prepare import prepare
    from em3.models.em3 import build_model

    cfg = with_overrides(preset("tiny"), {"speed.compute_dtype": "auto"})
    data = prepare(cfg)
    for native, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(precision, "native_bf16", lambda n=native: n)
        model = build_model(cfg, samples=data.samples, tokens=data.tokens)
        assert model.content.store.image_tokens.dtype == dtype
