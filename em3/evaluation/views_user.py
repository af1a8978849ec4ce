"""One user's view of a run: history in time order, the test period and its positives, the user's own test AUC."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from em3.data.schema import RawDataset, SampleSet


def user_history(raw: RawDataset, user_id: int) -> pd.DataFrame:
    """The user's interactions in time order with titles: item_id, title, timestamp, rating/label."""
    inter = raw.interactions[raw.interactions["user_id"] == user_id].sort_values("timestamp", kind="stable")
    titles = raw.items.set_index("item_id")["title"]
    out = inter.copy()
    out["title"] = titles.reindex(out["item_id"]).to_numpy()
    keep = [c for c in ("item_id", "title", "timestamp", "rating", "label") if c in out]
    return out[keep].reset_index(drop=True)


def test_period(samples: SampleSet, user_index: int) -> tuple[int | None, set[int]]:
    """(start timestamp, original item_ids rated positively in it) of the user's test period; (None, set()) without one.

    The period starts at the user's first test sample (what `recommend` scores from): its positives are
    the test split's and the cold items' (test_cold, val_cold) from that time on. A cold item clicked
    earlier was in the model's input history, so it is not a hit.
    """
    test = samples.splits.get("test", np.zeros(0, dtype=np.int64))
    test = test[samples.user[test] == user_index]                 # as recommend.first_test_row, without torch
    if len(test) == 0:
        return None, set()
    start = int(samples.timestamp[test].min())
    parts = [samples.splits[s] for s in ("test", "test_cold", "val_cold") if s in samples.splits]
    rows = np.concatenate(parts)
    rows = rows[(samples.user[rows] == user_index) & (samples.label[rows] > 0.5) & (samples.timestamp[rows] >= start)]
    return start, {int(samples.item_ids[i - 1]) for i in samples.item[rows]}


def test_positives(samples: SampleSet, user_index: int) -> set[int]:
    """Original item_ids the user rated positively in their test period (see `test_period`)."""
    return test_period(samples, user_index)[1]


def hits_per_user(samples: SampleSet, recs: Mapping[str, Sequence[Sequence[float]]]) -> dict[str, tuple[int, int]]:
    """user id → (items of their exported top-K they rated positively in their test period, test-period positives)."""
    out = {}
    for user, top in recs.items():
        u = user_index(samples, int(user))
        positives = test_period(samples, u)[1] if u is not None else set()
        out[user] = (sum(int(item) in positives for item, *_ in top), len(positives))
    return out


def random_hits(counts: Mapping[str, tuple[int, int]], *, k: int, num_items: int) -> float:
    """Hits a top-k drawn at random from the catalogue would score in all, on average: Σ k · positives / items.

    Slightly below the true chance level: the real candidates exclude each user's earlier positives.
    """
    return float(sum(k * pos for _, pos in counts.values()) / max(num_items, 1))


def user_index(samples: SampleSet, user_id: int) -> int | None:
    hit = np.flatnonzero(samples.user_ids == user_id)
    return int(hit[0]) if len(hit) else None


def user_test_auc(run_id: str, cfg, samples: SampleSet, raw: RawDataset, user: int) -> tuple[float, int, int]:
    """(AUC, positives, negatives) of the run's best checkpoint on this user's test samples (NaN if one class).

    Loads the model (feature cache hit for a trained config) — seconds; the page runs it on request.
    """
    import torch

    from em3.data.cache import build_item_tokens
    from em3.evaluation.evaluate import predict
    from em3.evaluation.metrics import auc
    from em3.models.em3 import build_model
    from em3.training import checkpoint
    from em3.training.tracking import download_dir

    rows = samples.splits["test"]
    rows = rows[samples.user[rows] == user]
    labels = samples.label[rows]
    pos, neg = int((labels > 0.5).sum()), int((labels <= 0.5).sum())
    if pos == 0 or neg == 0:
        return float("nan"), pos, neg
    tokens = (build_item_tokens(raw, samples, cfg.encoder, modalities=cfg.model.fusion.modalities, progress=False)
              if cfg.model.use_content else None)
    model = build_model(cfg, samples=samples, tokens=tokens)
    with tempfile.TemporaryDirectory() as d:
        model.load_state_dict(checkpoint.load_best(download_dir(run_id, "checkpoint", Path(d))))
    probs = predict(model, samples, rows, batch_size=256, device=torch.device("cpu"))
    return float(auc(labels, probs)), pos, neg
