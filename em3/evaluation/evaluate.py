"""Evaluation runs: a model's predictions over a split and the split's CTR metrics.

Shape letters: N samples of the split, B batch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from em3.data.schema import SampleSet
from em3.evaluation.metrics import ctr_metrics
from em3.training.batches import to_batch

SPLITS = ("val", "val_cold", "test", "test_cold")   # val_cold only where the data has it


def eval_catalogue(model: nn.Module):
    """The model's items encoded once for an evaluation (`speed.eval_item_cache`), else None (encode per batch)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not cfg.speed.eval_item_cache or not hasattr(model, "catalogue"):
        return None
    return model.catalogue()


@torch.no_grad()
def predict(model: nn.Module, samples: SampleSet, rows: np.ndarray, *, batch_size: int,
            device: torch.device, catalogue=None) -> np.ndarray:
    """(N,) click probabilities of the given sample rows, in eval mode (train mode restored after).

    With `catalogue` (EM3Model.catalogue()) content is looked up instead of encoded per batch.
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(rows), batch_size):
            batch = to_batch(samples, rows[i:i + batch_size], device)
            logits = (model(batch) if catalogue is None else model(batch, catalogue=catalogue)).logits.float()  # (B,)
            out.append(torch.sigmoid(logits).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def evaluate_split(model: nn.Module, samples: SampleSet, split: str, *, batch_size: int,
                   device: torch.device, catalogue=None) -> dict[str, float]:
    """{'auc', 'gauc', 'logloss'} on one split; NaNs when the split is empty.

    Items are encoded once for the split (see `eval_catalogue`) unless a `catalogue` is passed.
    """
    rows = samples.splits.get(split)
    if rows is None or len(rows) == 0:
        return {"auc": float("nan"), "gauc": float("nan"), "logloss": float("nan")}
    catalogue = catalogue if catalogue is not None else eval_catalogue(model)
    probs = predict(model, samples, rows, batch_size=batch_size, device=device, catalogue=catalogue)
    return ctr_metrics(samples.user[rows], samples.label[rows], probs)


def evaluate_splits(model: nn.Module, samples: SampleSet, *, batch_size: int, device: torch.device,
                    splits: tuple[str, ...] = SPLITS) -> dict[str, float]:
    """{'val/auc': ..., 'test_cold/logloss': ...} over the named splits the samples have."""
    out: dict[str, float] = {}
    catalogue = eval_catalogue(model)     # one encoding of the items serves every split
    for split in (s for s in splits if s in samples.splits):
        for name, value in evaluate_split(model, samples, split, batch_size=batch_size, device=device,
                                          catalogue=catalogue).items():
            out[f"{split}/{name}"] = value
    return out
