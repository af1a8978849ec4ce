"""speed.din_pair_scores: the top-K ranking gathers DIN's attention scores from one (item, history item) table.

DIN's attention unit reads a (candidate, history item) pair alone, so a ranking pass can score each pair of
items once and gather the scores for every user. These tests check that the gathered scores give the same
interest and logits as the per-(user, candidate, slot) path, through both units and both content paths, and
that the table is built only where it applies and pays.
"""
from __future__ import annotations

import pytest
import torch

from em3.models import rankers
from em3.models.em3 import build_model
from em3.models.rankers import TargetAttention

ARMS = ("id_only", "em3", "em3_frozen_history", "em3_shared_history", "em3_mean_fusion", "precomputed")


@pytest.mark.parametrize("per_candidate_mask", [False, True])
@pytest.mark.parametrize("block", [rankers.PAIR_BLOCK, 64])
def test_pairwise_from_pair_scores_equals_the_computed_pairs(monkeypatch, per_candidate_mask, block):
    """Histories gathered from a table (index 0 = padding, masked): the interest from the table's scores
    equals the one computed per (row, candidate, slot); a small PAIR_BLOCK exercises the candidate blocks."""
    monkeypatch.setattr(rankers, "PAIR_BLOCK", block)
    torch.manual_seed(3)
    unit = TargetAttention(4, hidden=(8,), dropout=0.0, split=True).eval()
    cands, table = torch.randn(7, 4), torch.randn(9, 4)                   # (C, D), (U, D)
    index = torch.randint(0, 9, (3, 5))                                    # (B, L) rows of the table
    mask = index != 0
    if per_candidate_mask:                                                 # (B, C, L): a cut per candidate
        mask = mask[:, None] & (torch.rand(3, 7, 5) > 0.3)
    want = unit.pairwise(cands, table[index], mask)                        # (B, C, D)
    got = unit.pairwise(cands, table[index], mask, scores=(unit.pair_scores(cands, table), index))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert want.abs().sum() > 0


def _trained_adapters(model):
    """Non-zero LoRA updates, so the history path's content differs from the target path's."""
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    return model


@pytest.mark.parametrize("arm,cut", [*((arm, {}) for arm in ARMS),
                                     ("em3", {"model__history__cut": "similar", "model__history__cut_k": 2})])
def test_catalogue_scores_from_pair_scores_equal_the_plain_ones(config, samples, tokens, batch, arm, cut):
    """Under the history cut each candidate masks its own history slots: on the gathered scores as on computed ones."""
    torch.manual_seed(0)
    model = _trained_adapters(build_model(config(arm, model__ranker__kind="din", **cut), samples=samples,
                                          tokens=tokens)).eval()
    assert model.cut_active == bool(cut)
    catalogue = model.catalogue()
    if arm == "em3":     # the history path is not the target path here, so the content table must be the history's
        assert not torch.allclose(catalogue.history[1:], catalogue.target[1:])
    history = batch["history"]
    scores = model.pair_scores(catalogue, rows=10_000, history_len=history.shape[1])
    n = samples.num_items
    assert scores is not None and scores.id.shape == (n, n + 1)
    assert (scores.content is None) == (arm == "id_only")
    want = model.score_catalogue(batch["user"], history, catalogue)                       # (B, I)
    got = model.score_catalogue(batch["user"], history, catalogue, scores)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_pair_scores_are_built_only_where_they_apply_and_pay(config, samples, tokens, batch):
    n, n_l = samples.num_items, batch["history"].shape[1]

    def built(rows=10_000, **kw) -> bool:
        torch.manual_seed(0)
        model = build_model(config("em3", **kw), samples=samples, tokens=tokens).eval()
        return model.pair_scores(model.catalogue(), rows=rows, history_len=n_l) is not None

    assert built(model__ranker__kind="din")
    assert not built(model__ranker__kind="din", speed__din_pair_scores=False)        # the lever off
    assert not built(model__ranker__kind="dcnv2")                                    # DIN's units only
    # no more pairs than one ranking pass would evaluate anyway: (rows · L) history slots against I + 1 items
    assert not built(rows=(n + 1) // n_l, model__ranker__kind="din")
    assert built(rows=(n + 1) // n_l + 1, model__ranker__kind="din")
