"""VBPR, LightGCN, FREEDOM and EM3-on-FREEDOM: shapes, what enters the score, CIC inputs."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from topk_fakes import FakeFusion

from em3.topk.config import TopKConfig
from em3.topk.models import EM3Freedom, Freedom, build_model

D = 8


def cfg(model: str, **kw) -> TopKConfig:
    return TopKConfig(model=model, embedding_dim=D, fusion_heads=2, knn_k=3, device="cpu", **kw)


def fake_fusion(data) -> FakeFusion:
    return FakeFusion(image_dim=data.image_feat.shape[1], text_dim=data.text_feat.shape[1], dim=D)


@pytest.mark.parametrize("model, width", [("vbpr", 2 * D), ("lightgcn", D), ("freedom", D), ("em3_freedom", 2 * D)])
def test_representations_and_batch_output(planted, model, width):
    torch.manual_seed(0)
    m = build_model(cfg(model), planted, fusion=fake_fusion(planted) if model == "em3_freedom" else None)
    u, i = m.representations()
    assert u.shape == (planted.num_users, width) and i.shape == (planted.num_items, width)
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])
    m.train()
    m.pre_epoch(torch.Generator().manual_seed(0))
    out = m(users, pos, neg, cic_neg=torch.randint(0, planted.num_items, (3, 16)))
    assert out.user.shape == out.pos.shape == out.neg.shape == (3, width)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in out.aux.values())
    assert (out.cic is not None) == (model == "em3_freedom")


def test_freedom_prunes_each_epoch_and_scores_with_the_full_graph(planted):
    torch.manual_seed(0)
    m: Freedom = build_model(cfg("freedom", edge_dropout=0.8), planted)
    full = m.norm_adj._nnz()
    m.pre_epoch(torch.Generator().manual_seed(1))
    first = m.masked_adj.indices().clone()
    assert m.masked_adj._nnz() == 2 * int(planted.train.nnz * (1 - 0.8)) < full
    m.pre_epoch(torch.Generator().manual_seed(2))
    assert not torch.equal(first, m.masked_adj.indices())
    m.eval()
    u_eval, _ = m.representations()
    assert torch.allclose(u_eval, m.propagate(m.norm_adj)[0])
    assert set(m.modality_bpr(u_eval[:2], torch.tensor([0, 1]), torch.tensor([2, 3]))) == {"image_bpr", "text_bpr"}


def test_freedom_item_graph_is_frozen(planted):
    m: Freedom = build_model(cfg("freedom"), planted)
    names = {n for n, _ in m.named_parameters()}
    assert "mm_adj" not in names and {"user_id", "item_id"} <= names
    assert m.mm_adj.shape == (planted.num_items, planted.num_items)
    assert not m.mm_adj.requires_grad


def test_em3_content_channel_enters_the_score(planted):
    torch.manual_seed(0)
    m: EM3Freedom = build_model(cfg("em3_freedom"), planted, fusion=fake_fusion(planted))
    m.eval()
    _, before = m.representations()
    with torch.no_grad():
        m.content.fusion.text_proj.weight.mul_(3.0)
    _, after = m.representations()
    assert torch.allclose(before[:, :D], after[:, :D])          # ID channel untouched
    assert not torch.allclose(before[:, D:], after[:, D:])      # content channel moved


def test_em3_cic_inputs_are_unit_vectors_of_the_right_items(planted):
    torch.manual_seed(0)
    m: EM3Freedom = build_model(cfg("em3_freedom"), planted, fusion=fake_fusion(planted))
    m.train()
    out = m(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]), cic_neg=torch.tensor([[6] * 16, [7] * 16]))
    c = out.cic
    assert c.content.shape == c.ids.shape == (2, D) and c.neg_content.shape == c.neg_id.shape == (2, 16, D)
    for t in (c.content, c.ids, c.neg_content, c.neg_id):
        assert torch.allclose(t.norm(dim=-1), torch.ones(t.shape[:-1]), atol=1e-5)
    assert torch.allclose(c.neg_id[0, 0], c.neg_id[0, 5])       # same sampled item, same projection
    no_cic = m(torch.tensor([0]), torch.tensor([2]), torch.tensor([4]), cic_neg=None)
    assert no_cic.cic is None


def test_em3_with_the_real_fusion_q_former(planted):
    pytest.importorskip("em3.models.fusion")
    torch.manual_seed(0)
    m = build_model(cfg("em3_freedom", fusion_queries=2), planted)
    assert type(m.content.fusion).__name__ == "FusionQFormer"
    assert m.content.image.shape == (planted.num_items, 1, planted.image_feat.shape[1])   # one pooled token
    u, i = m.representations()
    assert u.shape == (planted.num_users, 2 * D) and torch.isfinite(i).all()


def test_models_without_features_fail_clearly(planted):
    from em3.errors import DataError

    bare = dataclasses.replace(planted, image_feat=None, text_feat=None)
    assert build_model(cfg("lightgcn"), bare) is not None
    with pytest.raises(DataError, match="needs item image or text features"):
        build_model(cfg("freedom"), bare)
    with pytest.raises(DataError, match="content_input=tokens needs item tokens"):
        build_model(cfg("em3_freedom", content_input="tokens"), planted)
