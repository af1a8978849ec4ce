"""The EM3 model: every arm and ranker trains a step; determinism, dedup, CIC outputs, exports."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from em3.config import ARMS, ConfigError
from em3.errors import CacheError
from em3.models.em3 import build_model
from em3.models.losses import bce_loss, cic_loss
from tests.models.conftest import NUM_ITEMS, make_batch, make_tokens


def _model(config, samples, tokens, arm="em3", ranker="din", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = config(arm, model__ranker__kind=ranker, **kw)
    return build_model(cfg, samples=samples, tokens=tokens)


def _loss(model, batch):
    out = model(batch)
    loss = bce_loss(out.logits, batch["label"])
    if out.cic_content is not None:
        cic = model.cfg.model.cic
        loss = loss + cic.weight * cic_loss(out.cic_content, out.cic_id, temperature=cic.temperature,
                                            neg_content=out.cic_neg_content, neg_id=out.cic_neg_id)
    return out, loss


@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
@pytest.mark.parametrize("arm", sorted(ARMS))
def test_every_arm_trains_a_step(config, samples, tokens, batch, arm, ranker):
    model = _model(config, samples, tokens, arm, ranker).train()
    out, loss = _loss(model, batch)
    assert out.logits.shape == (8,) and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert model.ranker_parameters()[0].grad is not None
    if arm == "id_only":
        assert model.content is None and out.cic_content is None and model.content_parameters() == []
    else:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.content_parameters())
    assert (out.history_attention is not None) == (ranker == "din")
    if ranker == "din":
        assert (out.history_attention[batch["history"] == 0] == 0).all()


def test_same_seed_same_outputs_and_different_seed_differs(config, samples, tokens, batch):
    a = _model(config, samples, tokens, seed=3).train()
    b = _model(config, samples, tokens, seed=3).train()
    torch.manual_seed(7)
    la = _loss(a, batch)[1]
    torch.manual_seed(7)
    lb = _loss(b, batch)[1]
    assert la.item() == lb.item()
    c = _model(config, samples, tokens, seed=4).eval()
    assert not torch.allclose(c(batch).logits, a.eval()(batch).logits)


@pytest.mark.parametrize("arm", ["em3", "em3_frozen_history", "em3_shared_history", "precomputed"])
def test_dedup_gives_the_same_loss(config, samples, tokens, batch, arm):
    a = _model(config, samples, tokens, arm).eval()
    b = _model(config, samples, tokens, arm, model__history__dedup=False).eval()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(_loss(a, batch)[1], _loss(b, batch)[1], rtol=1e-5, atol=1e-6)


def test_cic_rows_are_the_unique_targets(config, samples, tokens, batch):
    out = _model(config, samples, tokens)(batch)
    u = torch.unique(batch["item"]).numel()
    assert u < 8 and out.cic_content.shape == (u, 16) and out.cic_id.shape == (u, 16)
    torch.testing.assert_close(out.cic_content.norm(dim=-1), torch.ones(u))
    assert out.cic_neg_content is None                     # in-batch negatives by default


def test_sampled_negatives_come_from_warm_items(config, samples, tokens, batch):
    model = _model(config, samples, tokens, model__cic__negatives="sampled", model__cic__num_negatives=5).train()
    out, loss = _loss(model, batch)
    u = torch.unique(batch["item"]).numel()
    assert out.cic_neg_content.shape == (u, 5, 16) and out.cic_neg_id.shape == (u, 5, 16)
    assert torch.isfinite(loss)
    assert set(model.warm_items.tolist()) == set(range(1, NUM_ITEMS + 1)) - {11, 12}
    assert model.eval()(batch).cic_neg_id is None           # no sampling at evaluation


def test_score_matches_forward(config, samples, tokens, batch):
    for ranker in ("din", "dcnv2"):
        model = _model(config, samples, tokens, ranker=ranker).eval()
        candidates = torch.stack([batch["item"], torch.full_like(batch["item"], 4)], dim=1)   # (B, 2)
        scores = model.score(batch["user"], batch["history"], candidates, chunk=5)   # chunks split users
        assert scores.shape == (8, 2)
        torch.testing.assert_close(scores[:, 0], model(batch).logits, rtol=1e-5, atol=1e-5)


def test_exports(config, samples, tokens):
    model = _model(config, samples, tokens).train()
    content = model.item_content_embeddings(batch_size=5)
    assert model.training                                    # mode restored
    assert content.shape == (NUM_ITEMS + 1, 16) and (content[0] == 0).all() and torch.isfinite(content).all()
    ids = model.item_id_embeddings()
    assert ids.shape == (NUM_ITEMS + 1, 8)
    torch.testing.assert_close(ids[11], model.item_id_emb.weight[1].detach())   # cold -> the unknown row
    assert (ids[0] == 0).all()
    att, segments = model.fusion_attention(torch.tensor([1, 3]))
    assert len(att) == 1 and att[0].shape == (2, 2, 2, 4 + 5)      # (N, heads, Nq, Ti+Tt)
    assert segments == (("image", 4), ("text", 5))
    assert (att[0][1, :, :, :4] == 0).all()                  # item 3 has no image


def test_id_only_exports_and_counts(config, samples):
    model = _model(config, samples, None, "id_only")
    assert not model.has_content and model.item_content_embeddings().shape == (NUM_ITEMS + 1, 0)
    assert model.fusion_attention(torch.tensor([1])) == ([], ())
    trainable, total = model.count_parameters()
    assert trainable == total == sum(p.numel() for p in model.parameters())


def test_param_groups_split_all_trainable_parameters(config, samples, tokens):
    model = _model(config, samples, tokens)
    groups = model.param_groups(lr_content=1e-4, lr_ranker=1e-3)
    assert [g["name"] for g in groups] == ["content", "ranker"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)


def test_lora_trains_far_fewer_parameters_in_the_history_path(config, samples, tokens):
    kw = dict(model__fusion__dim=64, model__fusion__num_heads=4)
    lora = _model(config, samples, tokens, "em3", **kw)
    shared = _model(config, samples, tokens, "em3_shared_history", **kw)
    assert 0 < lora.history_trainable_parameters() * 4 < shared.history_trainable_parameters()
    assert _model(config, samples, tokens, "em3_frozen_history").history_trainable_parameters() == 0


@pytest.mark.parametrize("speed, dtype", [({"speed__prenorm_tokens": False}, torch.float16),
                                          ({}, torch.float32),
                                          ({"speed__compute_dtype": "bf16"}, torch.bfloat16)])
def test_token_buffers_have_the_store_dtype_and_are_not_checkpointed(config, samples, tokens, speed, dtype):
    model = _model(config, samples, tokens, **speed)
    assert model.content.store.image_tokens.dtype == dtype and model.content.store.text_tokens.dtype == dtype
    keys = model.state_dict().keys()
    assert not any(k.endswith(("_tokens", "_mask", "id_index", "warm_items")) for k in keys)
    fresh = _model(config, samples, tokens, seed=1, **speed)
    fresh.load_state_dict(model.state_dict())               # a checkpoint round-trips
    batch = make_batch()
    torch.testing.assert_close(fresh.eval()(batch).logits, model.eval()(batch).logits)


def test_build_model_rejects_missing_or_mismatched_tokens(config, samples):
    with pytest.raises(ConfigError, match="model.use_content"):
        _model(config, samples, None, "em3")
    bad = make_tokens()
    bad = type(bad)({**bad.modalities, "text": dataclasses.replace(bad["text"], tokens=bad.text[:-1])})
    with pytest.raises(CacheError, match=r"ItemTokens\['text'\].tokens"):
        _model(config, samples, bad, "em3")
