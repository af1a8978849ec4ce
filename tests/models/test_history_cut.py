"""model.history.cut: the last K or the K most ID-similar history items per target; the rest is padding."""
from __future__ import annotations

import pytest
import torch

from em3.config import ConfigError, preset, with_overrides
from em3.data.schema import PAD_INDEX
from em3.models.em3 import build_model
from em3.models.history_cut import cut_mask, keep_last, keep_top


def test_keep_last_keeps_the_most_recent_real_items():
    mask = torch.tensor([[False, False, True, True, True], [False, False, False, False, True],
                         [False, False, False, False, False]])
    assert keep_last(mask, 2).tolist() == [[False, False, False, True, True], [False] * 4 + [True], [False] * 5]
    assert torch.equal(keep_last(mask, 0), mask)


def test_keep_top_keeps_the_highest_scoring_real_items_and_never_padding():
    scores = torch.tensor([[9.0, 1.0, 5.0, 3.0], [9.0, 8.0, 1.0, 2.0]])
    mask = torch.tensor([[False, True, True, True], [False, False, False, True]])
    # row 0: padding scores 9 but is never kept; of the real items 5 and 3 win. Row 1: one real item only.
    assert keep_top(scores, mask, 2).tolist() == [[False, False, True, True], [False, False, False, True]]


def test_similar_cut_is_by_id_dot_product_per_row_and_per_candidate():
    history = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]]])     # (1, 4, 2)
    mask = torch.ones(1, 4, dtype=torch.bool)
    rows = cut_mask(torch.tensor([[1.0, 0.1]]), history, mask, cut="similar", k=2)
    assert rows.tolist() == [[True, False, True, False]]                            # closest to (1, 0.1)
    cands = torch.tensor([[1.0, 0.1], [0.0, 1.0]])                                    # (C=2, 2)
    pairs = cut_mask(cands, history, mask, cut="similar", k=1, pairs=True)          # (1, 2, 4)
    assert pairs.tolist() == [[[True, False, False, False], [False, True, False, False]]]
    last = cut_mask(cands, history, mask, cut="last", k=1, pairs=True)   # the same for every candidate: (B, L)
    assert last.tolist() == [[False, False, False, True]]


def _cut_by_hand(model, batch):
    """The batch as the cut leaves it: every history item the target does not keep replaced by padding."""
    with torch.no_grad():
        target = model.item_id_emb(model.id_index[batch["item"]])
        history = model.item_id_emb(model.id_index[batch["history"]])
        kept = cut_mask(target, history, batch["history"] != PAD_INDEX, cut=model.cut, k=model.cut_k)
    return {**batch, "history": batch["history"].masked_fill(~kept, PAD_INDEX)}, kept


@pytest.mark.parametrize("cut", ["last", "similar"])
@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
def test_a_cut_model_equals_the_uncut_model_on_the_cut_history(config, samples, tokens, batch, cut, ranker):
    torch.manual_seed(0)
    cfg = config("em3", model__ranker__kind=ranker, model__history__cut=cut, model__history__cut_k=2)
    model = build_model(cfg, samples=samples, tokens=tokens).eval()
    torch.manual_seed(0)
    plain = build_model(config("em3", model__ranker__kind=ranker), samples=samples, tokens=tokens).eval()
    assert model.cut_active and not plain.cut_active
    by_hand, kept = _cut_by_hand(model, batch)
    assert (kept.sum(1) <= 2).all() and kept.sum() < (batch["history"] != PAD_INDEX).sum()   # it cut something
    out = model(batch)
    torch.testing.assert_close(out.logits, plain(by_hand).logits)
    if ranker == "din":                                                    # no attention on what was cut
        assert (out.history_attention[~kept] == 0).all()


@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
def test_catalogue_and_candidate_scoring_cut_per_candidate(config, samples, tokens, batch, ranker):
    torch.manual_seed(0)
    cfg = config("em3", model__ranker__kind=ranker, model__history__cut="similar", model__history__cut_k=2)
    model = build_model(cfg, samples=samples, tokens=tokens).eval()
    scores = model.score_catalogue(batch["user"], batch["history"], model.catalogue())        # (B, I)
    for item in (1, 5, samples.num_items):                 # each candidate with its own cut == forward on it
        rows = {**batch, "item": torch.full_like(batch["item"], item)}
        torch.testing.assert_close(scores[:, item - 1], model(rows).logits, rtol=1e-5, atol=1e-5)
    candidates = torch.stack([batch["item"], torch.full_like(batch["item"], 4)], dim=1)       # (B, 2)
    torch.testing.assert_close(model.score(batch["user"], batch["history"], candidates, chunk=5)[:, 0],
                               model(batch).logits, rtol=1e-5, atol=1e-5)


def test_a_cut_run_trains_and_a_similar_cut_without_k_is_refused():
    from em3.training.run import run_training

    cfg = with_overrides(preset("tiny"), {"train.epochs": 1, "model.history.cut": "similar",
                                          "model.history.cut_k": 3})
    assert 0.0 <= run_training(cfg).metrics["test/auc"] <= 1.0
    with pytest.raises(ConfigError, match="model.history.cut_k"):
        with_overrides(preset("tiny"), {"model.history.cut": "similar"})
