"""DCN-v2 and DIN against values worked out by hand: one cross layer, and what content does to DIN."""
from __future__ import annotations

import torch

from em3.config import RankerConfig
from em3.models.rankers import build_ranker


def test_one_dcnv2_cross_layer_is_x0_times_wx_plus_b_plus_x():
    torch.manual_seed(0)
    cfg = RankerConfig(kind="dcnv2", id_dim=1, cross_layers=1, mlp_hidden=(4,), dropout=0.0)
    ranker = build_ranker(cfg, content_dim=0).eval()
    with torch.no_grad():
        ranker.cross[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]]))
        ranker.cross[0].bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
    seen = []
    ranker.head.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    user, target = torch.tensor([[1.0]]), torch.tensor([[2.0]])
    history, mask = torch.tensor([[[3.0], [5.0], [99.0]]]), torch.tensor([[True, True, False]])
    out = ranker(user, target, history_id=history, history_mask=mask)
    # x0 = [user, target, masked mean of the history] = [1, 2, 4]
    # W x0 + b = [1, 4, 7] + [0.5, -1, 0] = [1.5, 3, 7];  x0 ⊙ (W x0 + b) + x0 = [1.5, 6, 28] + [1, 2, 4]
    torch.testing.assert_close(seen[0][:, :3], torch.tensor([[2.5, 8.0, 32.0]]))
    want = ranker.head(torch.cat([torch.tensor([[2.5, 8.0, 32.0]]), ranker.deep(torch.tensor([[1.0, 2.0, 4.0]]))], 1))
    torch.testing.assert_close(out.logits, want.squeeze(-1))


def _din_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)   # noqa: E731
    mask = torch.tensor([[True, True, True, False], [False, True, True, True], [True, True, True, True]])
    return dict(user=r(3, 8), target_id=r(3, 8), history_id=r(3, 4, 8), history_mask=mask,
                target_content=r(3, 6), history_content=r(3, 4, 6))


def _call(ranker, x):
    return ranker(x["user"], x["target_id"], history_id=x["history_id"], history_mask=x["history_mask"],
                  target_content=x["target_content"], history_content=x["history_content"])


def test_din_content_changes_the_logits_and_only_the_content_attention():
    torch.manual_seed(0)
    cfg = RankerConfig(kind="din", id_dim=8, mlp_hidden=(16,), attention_hidden=(8,), dropout=0.0)
    ranker = build_ranker(cfg, content_dim=6).eval()
    x = _din_inputs()
    before = _call(ranker, x)
    for key in ("target_content", "history_content"):
        changed = dict(x, **{key: x[key] + torch.linspace(-1.0, 1.0, x[key].shape[-1])})
        after = _call(ranker, changed)
        assert (after.logits - before.logits).abs().min() > 1e-6, key            # every row's logit moves
        torch.testing.assert_close(after.attention, before.attention)           # the ID attention ignores content
        assert not torch.allclose(after.content_attention, before.content_attention), key
