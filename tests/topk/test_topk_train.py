"""The BPR loop: negatives outside the training set, learning beats chance, early stopping, best-epoch test."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from topk_fakes import FakeFusion

from em3.errors import RunError
from em3.topk.config import TopKConfig
from em3.topk.sampling import NegativeSampler
from em3.topk.train import evaluate, fit, loss_terms
from em3.topk.models.base import CICInputs, TopKOutput


def test_negatives_are_never_training_items(planted):
    sampler = NegativeSampler(planted.train, rng=np.random.default_rng(0))
    users = np.repeat(np.arange(planted.num_users), 50)
    neg = sampler.sample(users)
    assert not np.asarray(planted.train[users, neg]).any()
    assert len(np.unique(neg)) > planted.num_items * 0.9          # uniform over the rest, not a few items


def small(model: str, **kw) -> TopKConfig:
    base = dict(model=model, epochs=20, batch_size=96, lr=1e-2, embedding_dim=16, fusion_heads=2, knn_k=5,
                patience=4, device="cpu")
    return TopKConfig(**{**base, **kw})


@pytest.mark.parametrize("model", ["lightgcn", "freedom"])
def test_training_beats_chance(planted, model):
    result = fit(small(model), planted)
    # chance: ~20 of the ~72 non-training items -> Recall@20 about 0.28
    assert result.test["recall@20"] > 0.6
    assert result.history[0]["train/bpr"] > result.history[result.best_epoch - 1]["train/bpr"]


def test_em3_trains_with_cic(planted):
    seen = []

    def cic(content, ids, *, temperature, neg_content, neg_id):
        seen.append((content.shape, neg_id.shape, temperature))
        from em3.models.losses import cic_loss
        return cic_loss(content, ids, temperature=temperature, neg_content=neg_content, neg_id=neg_id)

    fusion = FakeFusion(image_dim=planted.image_feat.shape[1], text_dim=planted.text_feat.shape[1], dim=16)
    result = fit(small("em3_freedom", epochs=4, cic_temperature=0.5), planted, fusion=fusion, cic_fn=cic)
    assert seen and seen[0][1][1] == 16 and seen[0][2] == 0.5
    assert "train/cic" in result.history[0] and result.test["recall@20"] > 0.4


def test_early_stopping_and_best_epoch_test(planted):
    epochs = []
    result = fit(small("lightgcn", epochs=200, patience=3, lr=5e-2), planted, on_epoch=lambda e, row: epochs.append(row))
    assert result.epochs_run < 200 and result.epochs_run == len(epochs) == len(result.history)
    assert result.epochs_run - result.best_epoch == 3
    best = max(r["val/epoch_recall@20"] for r in result.history)
    assert result.val["recall@20"] == best == result.history[result.best_epoch - 1]["val/epoch_recall@20"]


def test_same_seed_same_result(planted):
    a = fit(small("freedom", epochs=3, patience=0), planted)
    b = fit(small("freedom", epochs=3, patience=0), planted)
    assert a.test == b.test and a.epochs_run == 3


def test_evaluate_excludes_training_items(planted):
    """A model that scores every training item highest still gets credit only for held-out items."""
    class Cheater(torch.nn.Module):
        def representations(self):
            dense = torch.as_tensor(planted.train.toarray())           # (U, I)
            return dense, torch.eye(planted.num_items)
    metrics = evaluate(Cheater(), planted, "test", cfg=small("lightgcn"))
    assert metrics["precision@10"] < 0.2                            # training items would give ~0.8


def test_loss_terms_weighting():
    u, p, n = torch.ones(2, 3), torch.ones(2, 3), torch.zeros(2, 3)
    out = TopKOutput(u, p, n, aux={"l2": torch.tensor(2.0)},
                     cic=CICInputs(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 4, 3), torch.ones(2, 4, 3)))
    cfg = TopKConfig(reg_weight=0.5, cic_weight=0.1)
    terms = loss_terms(out, cfg, cic_fn=lambda *a, **k: torch.tensor(3.0))
    assert terms["loss"].item() == pytest.approx(terms["bpr"].item() + 0.5 * 2.0 + 0.1 * 3.0)


def test_non_finite_loss_raises(planted):
    with pytest.raises(RunError, match="non-finite loss"):
        fit(small("lightgcn", lr=1e30, epochs=3), planted)
