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


def _ranker_dtypes(model, batch) -> set[torch.dtype]:
    """The dtypes the ranker's Linear layers compute in during one forward."""
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in model.ranker.modules() if isinstance(m, torch.nn.Linear)]
    try:
        out = model(batch)
    finally:
        for h in hooks:
            h.remove()
    assert out.logits.dtype == torch.float32          # the loss always reads float32 logits
    return seen


@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
def test_ranker_dtype_bf16_runs_the_ranker_in_bf16_and_fp32_changes_nothing(ranker):
    from em3.data.prepare import prepare
    from em3.models.em3 import build_model
    from em3.training.batches import to_batch

    base = with_overrides(preset("tiny"), {"model.ranker.kind": ranker})
    data = prepare(base)
    batch = to_batch(data.samples, data.samples.splits["train"][:32], torch.device("cpu"))
    models = {}
    for dtype in ("fp32", "bf16"):
        torch.manual_seed(0)
        models[dtype] = build_model(with_overrides(base, {"speed.ranker_dtype": dtype}),
                                    samples=data.samples, tokens=data.tokens).eval()
    assert _ranker_dtypes(models["fp32"], batch) == {torch.float32}
    assert _ranker_dtypes(models["bf16"], batch) == {torch.bfloat16}
    with torch.no_grad():
        plain, low = models["fp32"](batch).logits, models["bf16"](batch).logits
    assert not torch.equal(plain, low)                                  # bf16 did run: results move ...
    torch.testing.assert_close(low, plain, atol=0.05, rtol=0.05)        # ... by bf16's rounding, no more


def test_ranker_dtype_is_checked_and_its_default_keeps_every_config_hash():
    from em3.bench.runs import config_hash
    from em3.config import ConfigError

    with pytest.raises(ConfigError, match="speed.ranker_dtype"):
        with_overrides(preset("tiny"), {"speed.ranker_dtype": "fp16"})
    cfg = preset("movielens")
    assert config_hash(with_overrides(cfg, {"speed.ranker_dtype": "fp32"})) == config_hash(cfg)
    assert config_hash(with_overrides(cfg, {"speed.ranker_dtype": "bf16"})) != config_hash(cfg)
