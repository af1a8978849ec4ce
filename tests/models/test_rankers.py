"""DIN and DCN-v2: shapes with and without content, attention masking, padding invariance."""
from __future__ import annotations

import pytest
import torch

from em3.config import RankerConfig
from em3.models.rankers import build_ranker, masked_mean

B, L, DI, DC = 4, 5, 8, 6
MASK = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)


def _inputs(content: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    return dict(user=r(B, DI), target_id=r(B, DI), history_id=r(B, L, DI) * MASK[..., None], history_mask=MASK,
                target_content=r(B, DC) if content else None,
                history_content=r(B, L, DC) * MASK[..., None] if content else None)


def _ranker(kind: str, content: bool):
    torch.manual_seed(0)
    cfg = RankerConfig(kind=kind, id_dim=DI, mlp_hidden=(16,), attention_hidden=(8,), dropout=0.0)
    return build_ranker(cfg, content_dim=DC if content else 0).eval()


def _call(ranker, x):
    return ranker(x["user"], x["target_id"], history_id=x["history_id"], history_mask=x["history_mask"],
                  target_content=x["target_content"], history_content=x["history_content"])


@pytest.mark.parametrize("kind", ["din", "dcnv2"])
@pytest.mark.parametrize("content", [True, False])
def test_shapes_and_finite(kind, content):
    out = _call(_ranker(kind, content), _inputs(content))
    assert out.logits.shape == (B,) and torch.isfinite(out.logits).all()
    assert (out.attention is not None) == (kind == "din")


@pytest.mark.parametrize("content", [True, False])
def test_din_attention_ignores_padding(content):
    w = _call(_ranker("din", content), _inputs(content)).attention     # (B, L)
    assert w.shape == (B, L)
    assert (w[~MASK] == 0).all()
    assert (w[MASK] > 0).all()
    torch.testing.assert_close(w.sum(-1), MASK.any(-1).float())         # 1 over real items, 0 if empty


@pytest.mark.parametrize("kind", ["din", "dcnv2"])
def test_values_at_padded_positions_do_not_matter(kind):
    ranker, x = _ranker(kind, True), _inputs(True)
    before = _call(ranker, x).logits
    x["history_id"] = x["history_id"] + 5.0 * (~MASK)[..., None]
    x["history_content"] = x["history_content"] - 3.0 * (~MASK)[..., None]
    torch.testing.assert_close(_call(ranker, x).logits, before)


def test_ranker_uses_content_when_given():
    ranker, x = _ranker("dcnv2", True), _inputs(True)
    before = _call(ranker, x).logits
    x["target_content"] = x["target_content"] + 1.0
    assert not torch.allclose(_call(ranker, x).logits, before)


def test_masked_mean_hand_values():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor([[2.0], [0.0]]))


def test_dcnv2_cross_layer_is_full_rank():
    ranker = _ranker("dcnv2", True)
    d0 = DI + 2 * DI + 2 * DC                  # user, target ID, pooled IDs, target and pooled content
    assert all(layer.weight.shape == (d0, d0) for layer in ranker.cross)
