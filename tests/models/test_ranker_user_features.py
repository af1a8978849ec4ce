"""User features in the rankers (model.ranker.user_features): they change scores, reach every scoring path,
and switched off (or absent) the model is exactly the one without them."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from em3.data.schema import UserFeatures
from em3.models.em3 import build_model
from tests.models.conftest import NUM_ITEMS, NUM_USERS, make_batch

NO_DROPOUT = {"model__fusion__dropout": 0.0, "model__ranker__dropout": 0.0}
# 5 users, 2 fields (sizes 3 and 4 incl. the unknown code 0); users 0 and 1 differ, users 1 and 2 agree
CODES = np.array([[1, 3], [2, 1], [2, 1], [0, 0], [1, 2]], dtype=np.int64)
FEATURES = UserFeatures(codes=CODES, names=("gender", "age"), sizes=(3, 4))


def _with_features(samples, features: UserFeatures = FEATURES):
    return dataclasses.replace(samples, user_features=features)


def _model(config, samples, tokens, *, arm="em3", ranker="din", on=True, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = config(arm, model__ranker__kind=ranker, model__ranker__user_features=on, **NO_DROPOUT, **kw)
    return build_model(cfg, samples=samples, tokens=tokens if cfg.model.use_content else None).eval()


def _same_user_vector(model, a: int, b: int) -> None:
    """Give users a and b the same user-ID embedding, so only their features can tell them apart."""
    with torch.no_grad():
        model.user_emb.weight[b] = model.user_emb.weight[a]


def _rows_of(users: list[int], item: int, history: list[int]) -> dict[str, torch.Tensor]:
    n = len(users)
    return {"user": torch.tensor(users), "item": torch.full((n,), item),
            "history": torch.tensor([history] * n), "label": torch.zeros(n)}


@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
@pytest.mark.parametrize("arm", ["em3", "id_only"])
def test_features_tell_apart_users_whose_id_embedding_and_history_agree(config, samples, tokens, arm, ranker):
    on = _model(config, _with_features(samples), tokens, arm=arm, ranker=ranker)
    off = _model(config, _with_features(samples), tokens, arm=arm, ranker=ranker, on=False)
    for m in (on, off):
        _same_user_vector(m, 0, 1)
        _same_user_vector(m, 0, 2)
    rows = _rows_of([0, 1, 2], item=4, history=[0, 0, 2, 3, 5, 7])
    s_on, s_off = on(rows).logits, off(rows).logits                          # (3,)
    assert (s_on[0] - s_on[1]).abs() > 1e-4             # users 0, 1: different features -> different scores
    torch.testing.assert_close(s_on[1], s_on[2], rtol=0, atol=1e-7)   # users 1, 2: same features -> same score
    torch.testing.assert_close(s_off[0], s_off[1], rtol=0, atol=1e-7)  # switched off: the features are ignored


@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
def test_the_scores_read_the_codes_buffer(config, samples, tokens, ranker):
    model = _model(config, _with_features(samples), tokens, ranker=ranker)
    rows = _rows_of([0], item=4, history=[0, 0, 2, 3, 5, 7])
    before = model(rows).logits
    model.user_feature_emb.rows[0] = model.user_feature_emb.rows[3]          # user 0 takes user 3's codes
    assert not torch.isclose(model(rows).logits, before).any()


@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
def test_no_features_or_switched_off_is_exactly_the_model_without_them(config, samples, tokens, batch, ranker):
    plain = _model(config, samples, tokens, ranker=ranker)                              # no users table, on
    off = _model(config, _with_features(samples), tokens, ranker=ranker, on=False)      # features, off
    on = _model(config, _with_features(samples), tokens, ranker=ranker)
    assert plain.user_feature_emb is None and off.user_feature_emb is None
    assert plain.count_parameters() == off.count_parameters()
    assert plain.state_dict().keys() == off.state_dict().keys()
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(off.state_dict()[name], value, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(off(batch).logits, plain(batch).logits, rtol=0, atol=0)
    # on: one id_dim row per code of each field, and a ranker input wider by F * id_dim
    id_dim, width = on.cfg.model.ranker.id_dim, len(FEATURES.names) * on.cfg.model.ranker.id_dim
    table = sum(FEATURES.sizes) * id_dim
    extra = on.count_parameters()[1] - plain.count_parameters()[1]
    if ranker == "din":       # only the output MLP's first layer reads the user vector
        assert extra == table + width * on.cfg.model.ranker.mlp_hidden[0]
    else:                     # the cross layers and the deep MLP read x0, the head their outputs
        d0 = plain.ranker.cross[0].in_features
        assert on.ranker.cross[0].in_features == on.ranker.deep[0].in_features == d0 + width
        assert on.ranker.head.in_features == plain.ranker.head.in_features + width
    assert "user_feature_emb.table.weight" in on.state_dict()
    assert "user_feature_emb.rows" not in on.state_dict()                 # rebuilt from the samples


@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
@pytest.mark.parametrize("arm", ["em3", "id_only"])
def test_every_scoring_path_sees_the_features(config, samples, tokens, arm, ranker):
    model = _model(config, _with_features(samples), tokens, arm=arm, ranker=ranker)
    users = torch.arange(NUM_USERS)
    history = make_batch(NUM_USERS, seed=3)["history"]                       # (U, L)
    items = torch.arange(1, NUM_ITEMS + 1)
    grid = model.score_catalogue(users, history, model.catalogue())          # (U, I)
    pairs = model.score(users, history, items.expand(NUM_USERS, -1))         # (U, I)
    flat = {"user": users.repeat_interleave(NUM_ITEMS), "item": items.repeat(NUM_USERS),
            "history": history.repeat_interleave(NUM_ITEMS, dim=0), "label": torch.zeros(NUM_USERS * NUM_ITEMS)}
    forward = model(flat).logits.reshape(NUM_USERS, NUM_ITEMS)
    torch.testing.assert_close(grid, forward, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pairs, forward, rtol=1e-5, atol=1e-5)
    if model.has_content:
        looked_up = model(flat, catalogue=model.catalogue()).logits.reshape(NUM_USERS, NUM_ITEMS)
        torch.testing.assert_close(looked_up, forward, rtol=1e-5, atol=1e-5)


def test_feature_table_trains_at_lr_ranker(config, samples, tokens, batch):
    model = _model(config, _with_features(samples), tokens).train()
    groups = {g["name"]: {id(p) for p in g["params"]} for g in model.param_groups(lr_content=1e-4, lr_ranker=1e-3)}
    table = model.user_feature_emb.table.weight
    assert id(table) in groups["ranker"] and id(table) not in groups["content"]
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch).logits, batch["label"]).backward()
    assert table.grad is not None and table.grad.abs().sum() > 0


def test_a_checkpoint_restores_into_the_model_the_config_and_samples_build(config, samples, tokens, batch):
    trained = _model(config, _with_features(samples), tokens, seed=1)
    rebuilt = _model(config, _with_features(samples), tokens, seed=2)
    rebuilt.load_state_dict(trained.state_dict())                          # strict: same keys and shapes
    torch.testing.assert_close(rebuilt(batch).logits, trained(batch).logits, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="user_feature_emb"):
        _model(config, _with_features(samples), tokens, on=False).load_state_dict(trained.state_dict())
