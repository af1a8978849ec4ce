"""History strategies: where gradient flows (lora/shared/frozen), adapters on/off, dedup, counts."""
from __future__ import annotations

import pytest
import torch

from em3.config import ConfigError
from em3.models.history import ContentEncoder

TARGET = torch.tensor([1, 2, 3, 2])
HISTORY = torch.tensor([[0, 0, 4, 5, 3], [0, 6, 7, 8, 4], [0, 0, 0, 0, 0], [1, 2, 9, 10, 12]])


def _encoder(config, tokens, strategy: str, **kw) -> ContentEncoder:
    torch.manual_seed(0)
    cfg = config("em3", model__history__strategy=strategy, model__fusion__dropout=0.0, **kw)
    return ContentEncoder(cfg.model, tokens=tokens)


def _split(enc: ContentEncoder):
    base = {n: p for n, p in enc.fusion.named_parameters() if "lora_" not in n}
    lora = {n: p for n, p in enc.fusion.named_parameters() if "lora_" in n}
    return base, lora


def _no_grad(p) -> bool:
    return p.grad is None or bool((p.grad == 0).all())


def test_lora_history_loss_trains_only_the_adapters(config, tokens):
    enc = _encoder(config, tokens, "lora")
    base, lora = _split(enc)
    assert lora and all(p.requires_grad for p in base.values())   # peft's freezing was undone
    _, hist = enc(TARGET, HISTORY)
    hist.pow(2).sum().backward()
    assert all(_no_grad(p) for p in base.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values())


def test_lora_target_loss_trains_the_base_weights_not_the_adapters(config, tokens):
    enc = _encoder(config, tokens, "lora")
    base, lora = _split(enc)
    target, _ = enc(TARGET, HISTORY)
    target.pow(2).sum().backward()
    # zero, not None, with speed.shared_token_reads: the paths' score vectors share one backward
    assert all(_no_grad(p) for p in lora.values())
    for name in ("queries", "layers.0.attn.q_proj.base_layer.weight", "proj.image.token_proj.weight"):
        assert base[name].grad is not None and base[name].grad.abs().sum() > 0, name


def test_lora_adapters_change_history_but_not_targets(config, tokens):
    enc = _encoder(config, tokens, "lora").eval()
    t0, h0 = enc(TARGET, HISTORY)
    with torch.no_grad():                                   # lora_B starts at zero: make the adapters matter
        for n, p in enc.fusion.named_parameters():
            if "lora_B" in n:
                p.normal_()
    t1, h1 = enc(TARGET, HISTORY)
    torch.testing.assert_close(t0, t1)
    assert not torch.allclose(h0[0, 2:], h1[0, 2:])
    assert all(not getattr(m, "_disable_adapters", False) for m in enc.fusion.modules())   # state restored


def test_shared_history_trains_the_base_and_frozen_trains_nothing(config, tokens):
    shared = _encoder(config, tokens, "shared")
    shared(TARGET, HISTORY)[1].pow(2).sum().backward()
    assert shared.fusion.queries.grad.abs().sum() > 0
    frozen = _encoder(config, tokens, "frozen")
    _, hist = frozen(TARGET, HISTORY)
    assert not hist.requires_grad
    assert frozen.history_trainable_parameters() == 0


def test_padding_positions_are_zero_and_empty_history_is_finite(config, tokens):
    for strategy in ("lora", "shared", "frozen", "precomputed"):
        target, hist = _encoder(config, tokens, strategy)(TARGET, HISTORY)
        assert target.shape == (4, 16) and hist.shape == (4, 5, 16)
        assert (hist[HISTORY == 0] == 0).all() and torch.isfinite(hist).all()
        assert (hist[HISTORY != 0].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("strategy", ["lora", "shared", "frozen", "precomputed"])
def test_dedup_gives_the_same_embeddings(config, tokens, strategy):
    a = _encoder(config, tokens, strategy).eval()
    b = _encoder(config, tokens, strategy, model__history__dedup=False).eval()
    b.load_state_dict(a.state_dict())
    for x, y in zip(a(TARGET, HISTORY), b(TARGET, HISTORY)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_dedup_encodes_each_unique_item_once(config, tokens, monkeypatch):
    enc = _encoder(config, tokens, "shared")
    seen = []
    original = enc.embed
    monkeypatch.setattr(enc, "embed", lambda items, **kw: (seen.append(items.numel()), original(items, **kw))[1])
    enc(TARGET, HISTORY)
    assert seen == [torch.unique(torch.cat([TARGET, HISTORY.flatten()])).numel()]


def test_precomputed_has_no_qformer_and_only_a_projection(config, tokens):
    enc = _encoder(config, tokens, "precomputed")
    assert enc.fusion is None and enc.attention(TARGET) == ([], ())
    assert [n for n, _ in enc.named_parameters()] == ["precomputed.token_proj.weight", "precomputed.token_proj.bias"]
    assert enc.precomputed.features.shape == (13, 10 + 7)


def test_lora_trains_far_fewer_history_parameters_than_shared(config, tokens):
    lora = _encoder(config, tokens, "lora", model__fusion__dim=64, model__fusion__num_heads=4)
    shared = _encoder(config, tokens, "shared", model__fusion__dim=64, model__fusion__num_heads=4)
    assert 0 < lora.history_trainable_parameters() < shared.history_trainable_parameters() / 4


def test_lora_on_blip2_and_mean_modes(config, tokens):
    for mode in ("blip2", "mean"):
        enc = _encoder(config, tokens, "lora", model__fusion__mode=mode,
                       model__history__lora_targets=("out_proj", "fc1", "token_proj"))
        assert enc.history_trainable_parameters() > 0
        assert torch.isfinite(enc(TARGET, HISTORY)[1]).all()


def test_lora_targets_absent_from_the_module_are_rejected(config, tokens):
    with pytest.raises(ConfigError, match="model.history.lora_targets"):
        _encoder(config, tokens, "lora", model__history__lora_targets=("fc1", "fc2"))


def test_lora_history_loss_puts_nonzero_gradient_on_every_adapter(config, tokens):
    enc = _encoder(config, tokens, "lora")
    base, lora = _split(enc)
    # at init lora_B = 0, so lora_A's gradient is exactly 0 (peft's zero-start); every lora_B gets one
    enc(TARGET, HISTORY)[1].pow(2).sum().backward()
    for n, p in lora.items():
        assert p.grad is not None, n
        assert (p.grad.abs().sum() > 0) == ("lora_B" in n), n
    enc.zero_grad(set_to_none=True)
    with torch.no_grad():                                   # adapters that have trained: both halves get gradient
        for n, p in lora.items():
            if "lora_B" in n:
                p.normal_(std=0.1)
    enc(TARGET, HISTORY)[1].pow(2).sum().backward()
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values()), \
        [n for n, p in lora.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert all(_no_grad(p) for p in base.values())
