"""The model's side of ID dropout: marked IDs become the unknown ID in training only; content and CIC keep the item."""
from __future__ import annotations

import pytest
import torch

from em3.data.schema import UNKNOWN_ID
from em3.models.em3 import build_model
from tests.models.conftest import L

NO_DROPOUT = {"model__fusion__dropout": 0.0, "model__ranker__dropout": 0.0}


def _model(config, samples, tokens, ranker: str):
    torch.manual_seed(0)
    return build_model(config("em3", model__ranker__kind=ranker, **NO_DROPOUT), samples=samples, tokens=tokens)


def _batch() -> dict[str, torch.Tensor]:
    """Targets from items 1-2, histories from items 3-10 (left-padded), so the two roles can be told apart."""
    g = torch.Generator().manual_seed(0)
    history = torch.randint(3, 11, (6, L), generator=g)
    history[:, :2] = 0
    history[0] = 0                                                            # an empty history
    return {"user": torch.arange(6) % 5, "item": torch.tensor([1, 2, 1, 2, 1, 2]), "history": history,
            "label": torch.tensor([1.0, 0, 1, 0, 1, 0])}


@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
def test_dropped_targets_score_as_the_unknown_id_with_their_own_content(config, samples, tokens, ranker):
    model = _model(config, samples, tokens, ranker).train()
    batch = _batch()
    dropped = model({**batch, "drop_item_id": torch.ones(6, dtype=torch.bool)})
    with torch.no_grad():
        model.id_index[[1, 2]] = UNKNOWN_ID                                   # the same items, cold by id_index
    cold = model(batch)
    torch.testing.assert_close(dropped.logits, cold.logits, rtol=0, atol=0)


@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
def test_dropped_history_ids_score_as_the_unknown_id(config, samples, tokens, ranker):
    model = _model(config, samples, tokens, ranker).train()
    batch = _batch()
    marks = batch["history"] != 0
    dropped = model({**batch, "drop_history_id": marks})
    with torch.no_grad():
        model.id_index[3:11] = UNKNOWN_ID
    torch.testing.assert_close(dropped.logits, model(batch).logits, rtol=0, atol=0)


def test_only_marked_rows_change(config, samples, tokens):
    model = _model(config, samples, tokens, "din").train()
    batch = _batch()
    marks = torch.tensor([True, False, True, False, False, False])
    plain, dropped = model(batch).logits, model({**batch, "drop_item_id": marks}).logits
    torch.testing.assert_close(dropped[~marks], plain[~marks], rtol=0, atol=0)
    assert ((dropped[marks] - plain[marks]).abs() > 1e-6).all()


def test_eval_ignores_the_marks(config, samples, tokens):
    model = _model(config, samples, tokens, "din").eval()
    batch = _batch()
    marked = {**batch, "drop_item_id": torch.ones(6, dtype=torch.bool), "drop_history_id": batch["history"] != 0}
    torch.testing.assert_close(model(marked).logits, model(batch).logits, rtol=0, atol=0)


def test_cic_pairs_content_with_the_items_own_id_under_dropout(config, samples, tokens):
    model = _model(config, samples, tokens, "din").train()
    batch = _batch()
    plain = model(batch)
    dropped = model({**batch, "drop_item_id": torch.ones(6, dtype=torch.bool)})
    torch.testing.assert_close(dropped.cic_id, plain.cic_id, rtol=0, atol=0)
    torch.testing.assert_close(dropped.cic_content, plain.cic_content, rtol=0, atol=0)
