"""speed.shared_token_reads, speed.din_fused_unit and speed.din_pack_history: where each runs, and the same
function (logits, gradients, dropout draws, attention weights) as the plain path in the cases it must cover."""
from __future__ import annotations

import pytest
import torch

from em3.models.dropout import FastDropout, relu_dropout
from em3.models.em3 import build_model
from em3.models.rankers import TargetAttention

NO_DROPOUT = {"model__fusion__dropout": 0.0, "model__ranker__dropout": 0.0}


def _pair(config, samples, tokens, lever: str, arm: str = "em3", **kw):
    models = []
    for on in (False, True):
        torch.manual_seed(0)
        models.append(build_model(config(arm, **{f"speed__{lever}": on}, **kw), samples=samples, tokens=tokens))
    return models


def _train_step(model, batch, seed: int = 3):
    """Training-mode logits, DIN's attention weights and every gradient of one BCE step from `seed`."""
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)
    out = model(batch)
    torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch["label"]).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def _assert_same_step(off, on, batch):
    out_off, g_off = _train_step(off, batch)
    out_on, g_on = _train_step(on, batch)
    torch.testing.assert_close(out_on.logits, out_off.logits, rtol=1e-5, atol=1e-6)
    for w_on, w_off in ((out_on.history_attention, out_off.history_attention),
                        (out_on.history_content_attention, out_off.history_content_attention)):
        assert (w_on is None) == (w_off is None)
        if w_on is not None:
            torch.testing.assert_close(w_on, w_off, rtol=1e-5, atol=1e-6)
    assert g_off.keys() == g_on.keys() and g_off
    for name in g_off:
        torch.testing.assert_close(g_on[name], g_off[name], rtol=1e-4, atol=1e-6, msg=name)


def test_shared_token_reads_runs_under_lora_only(config, samples, tokens):
    torch.manual_seed(0)
    assert build_model(config("em3"), samples=samples, tokens=tokens).content.shared_reads
    for arm, kw in (("em3_frozen_history", {}), ("em3_shared_history", {}), ("em3", {"speed__project_once": False}),
                    ("em3", {"speed__fold_attention": False}), ("em3", {"model__history__lora_dropout": 0.1}),
                    ("em3", {"model__fusion__mode": "blip2"})):
        torch.manual_seed(0)
        assert not build_model(config(arm, **kw), samples=samples, tokens=tokens).content.shared_reads, (arm, kw)


@pytest.mark.parametrize("kw", [{}, {"model__fusion__num_queries": 3}, {"model__history__lora_targets": ("q_proj", "k_proj")},
                                {"model__fusion__modalities": ("text",)}])
def test_shared_token_reads_train_as_the_two_fusions(config, samples, tokens, batch, kw):
    """Dropout on (the same draws), adapters trained away from zero (so the paths differ), more queries, adapters
    on q/k only, one modality: the same step, and the history path still trains the adapters alone."""
    off, on = _pair(config, samples, tokens, "shared_token_reads", speed__fast_dropout=True, **kw)
    assert on.content.shared_reads and not off.content.shared_reads
    for model in (off, on):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.linspace(-0.3, 0.3, p.numel()).view_as(p))
    _assert_same_step(off, on, batch)
    _, g_on = _train_step(on, batch)
    assert any("lora_" in n and g.abs().sum() > 0 for n, g in g_on.items())


@pytest.mark.parametrize("arm", ["id_only", "em3", "em3_shared_history", "precomputed"])
@pytest.mark.parametrize("kw", [{}, {"speed__din_table_keys": False}, {"model__history__cut_k": 2},
                                {"model__ranker__attention_hidden": (8, 4)}, {"train__id_dropout": 0.5}])
def test_packed_fused_unit_trains_as_the_plain_unit(config, samples, tokens, batch, arm, kw):
    """Both DIN levers on against both off, dropout on (FastDropout): the same logits, attention weights and
    gradients, with the key term per table row or not, the history cut, two hidden layers and ID dropout.
    The batch has an empty history and left padding."""
    models = []
    for on in (False, True):
        torch.manual_seed(0)
        models.append(build_model(config(arm, speed__fast_dropout=True, speed__din_fused_unit=on,
                                         speed__din_pack_history=on, **kw), samples=samples, tokens=tokens))
    off, on = models
    assert on.ranker.id_attention.packed and not off.ranker.id_attention.fused
    _assert_same_step(off, on, batch)


@pytest.mark.parametrize("arm", ["id_only", "em3"])
def test_fused_gathers_keep_dcnv2s_step(config, samples, tokens, batch, arm):
    """DCN-v2 has no attention unit, but its history rows are gathered by index_select too (no padding-row
    gradient either way: masked_mean zeroes the padded positions)."""
    off, on = _pair(config, samples, tokens, "din_fused_unit", arm, model__ranker__kind="dcnv2",
                    speed__fast_dropout=True)
    assert on.fused_gathers and not off.fused_gathers
    _assert_same_step(off, on, batch)
    _, grads = _train_step(on, batch)
    assert torch.equal(grads["item_id_emb.weight"][0], torch.zeros_like(grads["item_id_emb.weight"][0]))


def test_fused_unit_keeps_the_plain_layers_under_torch_dropout(config, samples, tokens, batch):
    """torch's own dropout mask cannot be drawn outside nn.Dropout: there the fused and packed paths stand down."""
    torch.manual_seed(0)
    model = build_model(config("em3", speed__fast_dropout=False), samples=samples, tokens=tokens).train()
    unit = model.ranker.id_attention
    assert unit.fused and unit.packed and not unit._fusable()
    assert model.eval() and unit._fusable()   # in eval no dropout draws a mask


def test_empty_history_rows_pool_to_zero_when_packed():
    torch.manual_seed(0)
    unit = TargetAttention(4, hidden=(6,), dropout=0.0, split=True, fused=True, packed=True)
    history, mask = torch.randn(3, 5, 4), torch.rand(3, 5) > 0.3
    mask[1] = False
    interest, w = unit(torch.randn(3, 4), history, mask)
    assert torch.equal(interest[1], torch.zeros(4)) and torch.equal(w[1], torch.zeros(5))
    assert torch.equal(w == 0, ~mask) or bool((w[mask] > 0).all())


def test_relu_dropout_is_dropout_of_relu_with_the_same_mask():
    x = torch.randn(64, 33, requires_grad=True)
    g = torch.randn(64, 33)
    drop = FastDropout(0.3).train()
    torch.manual_seed(5)
    want = drop(torch.relu(x))
    (want_grad,) = torch.autograd.grad(want, x, g)
    torch.manual_seed(5)
    y, scale = relu_dropout(x, drop)
    (got_grad,) = torch.autograd.grad(y * scale, x, g)
    torch.testing.assert_close(y * scale, want)
    torch.testing.assert_close(got_grad, want_grad)
    assert 0 < (want == 0).float().mean() < 1
    with pytest.raises(TypeError, match="FastDropout"):
        relu_dropout(x, torch.nn.Dropout(0.3).train())
