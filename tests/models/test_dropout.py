"""speed.fast_dropout: FastDropout keeps nn.Dropout's contract (rate, scaling, train-only, seeded) and its
backward applies the forward's mask; use_fast_dropout swaps every dropout of a built model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from em3.models.dropout import FastDropout, drop_mask, use_fast_dropout
from em3.models.em3 import build_model


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_drop_rate_matches_p_and_neighbours_are_independent(p):
    torch.manual_seed(0)
    m = drop_mask((1_000_003,), p)           # not a multiple of the 3 lanes: the tail is cut, not reused
    assert m.shape == (1_000_003,) and m.dtype == torch.bool
    rate = m.float().mean().item()
    assert abs(rate - p) < 5 * (p * (1 - p) / m.numel()) ** 0.5       # 5 binomial std
    # Lanes of one word and neighbouring words are independent: both-dropped pairs occur at p².
    both = (m[1:] & m[:-1]).float().mean().item()
    assert abs(both - p * p) < 0.005


def test_forward_scales_kept_elements_and_backward_uses_the_same_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 50, 32, requires_grad=True)
    layer = FastDropout(0.25).train()
    y = layer(x)
    kept = y != 0
    assert 0.2 < 1 - kept.float().mean().item() < 0.3
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    g = torch.randn_like(x)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(kept, g / 0.75, 0.0))


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(10, 7)
    assert FastDropout(0.5).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="p must be in"):
        FastDropout(1.0)


def test_the_mask_is_seeded():
    torch.manual_seed(3)
    a = drop_mask((4, 1000), 0.3)
    torch.manual_seed(3)
    b = drop_mask((4, 1000), 0.3)
    torch.manual_seed(4)
    c = drop_mask((4, 1000), 0.3)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_use_fast_dropout_swaps_every_dropout_of_a_built_model(config, samples, tokens, batch):
    plain = build_model(config("em3"), samples=samples, tokens=tokens)
    n_plain = sum(type(m) is nn.Dropout for m in plain.modules())
    assert n_plain > 0
    fast = build_model(config("em3", speed__fast_dropout=True), samples=samples, tokens=tokens)
    assert sum(type(m) is nn.Dropout for m in fast.modules()) == 0
    assert sum(isinstance(m, FastDropout) for m in fast.modules()) == n_plain
    # Same weights from the same seed, so eval logits agree; training still backpropagates.
    torch.manual_seed(0)
    a = build_model(config("em3"), samples=samples, tokens=tokens)
    torch.manual_seed(0)
    b = build_model(config("em3", speed__fast_dropout=True), samples=samples, tokens=tokens)
    torch.testing.assert_close(a.eval()(batch).logits, b.eval()(batch).logits)
    b.train()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(b(batch).logits, batch["label"])
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.parameters())
    assert use_fast_dropout(nn.Sequential(nn.Dropout(0.0), nn.Linear(2, 2))) == 0   # p = 0 is left alone
