"""Per-user top-K ranking of the catalogue with a trained model: test Recall/NDCG@K and recommendations.

Shape letters: U users, L history length, C candidate items, K cut-off.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from em3.data.schema import SampleSet
from em3.evaluation.metrics import ndcg_at_k, recall_at_k


def positives(samples: SampleSet, user: int, splits: tuple[str, ...]) -> set[int]:
    """Item indices the user clicked in the given splits."""
    rows = np.concatenate([samples.splits[s] for s in splits if s in samples.splits])
    rows = rows[(samples.user[rows] == user) & (samples.label[rows] > 0.5)]
    return set(int(i) for i in samples.item[rows])


def latest_history(samples: SampleSet, user: int) -> np.ndarray:
    """(L,) the user's most recent history, its last sample's item appended if it was a positive."""
    rows = np.flatnonzero(samples.user == user)
    last = rows[np.argmax(samples.timestamp[rows])]
    hist = samples.history[last]
    if samples.label[last] > 0.5:
        hist = np.r_[hist[1:], samples.item[last]]
    return hist.astype(np.int64)


@torch.no_grad()
def rank_items(model: nn.Module, users: np.ndarray, histories: np.ndarray, *, num_items: int,
               exclude: list[set[int]], k: int, device: torch.device, item_chunk: int = 512,
               user_chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices (U, k) and their logits (U, k) over all items 1..I, minus each user's excluded set."""
    was_training = model.training
    model.eval()
    candidates = torch.arange(1, num_items + 1, device=device)               # (C,)
    top_items, top_scores = [], []
    try:
        for a in range(0, len(users), user_chunk):
            u = torch.as_tensor(users[a:a + user_chunk], device=device)       # (B,)
            h = torch.as_tensor(histories[a:a + user_chunk], device=device)   # (B, L)
            scores = []
            for c in range(0, num_items, item_chunk):
                items = candidates[c:c + item_chunk].expand(len(u), -1)       # (B, Ck)
                scores.append(model.score(u, h, items).float())
            s = torch.cat(scores, dim=1).cpu().numpy()                         # (B, C)
            for j, ex in enumerate(exclude[a:a + user_chunk]):
                idx = [i - 1 for i in ex if 1 <= i <= num_items]
                s[j, idx] = -np.inf
            kk = min(k, num_items)
            order = np.argsort(-s, axis=1, kind="stable")[:, :kk]             # (B, k)
            top_items.append(order + 1)
            top_scores.append(np.take_along_axis(s, order, axis=1))
    finally:
        model.train(was_training)
    return np.concatenate(top_items), np.concatenate(top_scores)


def evaluate_topk(model: nn.Module, samples: SampleSet, *, k: int, device: torch.device) -> dict[str, float]:
    """test/recall_at_k and test/ndcg_at_k (MLflow forbids "@" in names): rank the catalogue for each user with test positives.

    History = the one of the user's first test sample; excluded = the user's train and val positives.
    """
    test = samples.splits.get("test", np.zeros(0, dtype=np.int64))
    test = test[samples.label[test] > 0.5]
    users = np.unique(samples.user[test])
    if len(users) == 0:
        return {f"test/recall_at_{k}": float("nan"), f"test/ndcg_at_{k}": float("nan")}
    histories, relevant, exclude = [], [], []
    for u in users:
        rows = test[samples.user[test] == u]
        first = rows[np.argmin(samples.timestamp[rows])]
        histories.append(samples.history[first])
        relevant.append(set(int(i) for i in samples.item[rows]))
        exclude.append(positives(samples, int(u), ("train", "val")) - relevant[-1])
    ranked, _ = rank_items(model, users, np.stack(histories), num_items=samples.num_items, exclude=exclude,
                           k=k, device=device)
    return {f"test/recall_at_{k}": recall_at_k(ranked, relevant, k), f"test/ndcg_at_{k}": ndcg_at_k(ranked, relevant, k)}


def recommend(model: nn.Module, samples: SampleSet, users: np.ndarray, *, k: int,
              device: torch.device) -> dict[str, list[list[float]]]:
    """{original user_id: [[item_id, score], ...]} top-k, excluding each user's training positives."""
    histories = np.stack([latest_history(samples, int(u)) for u in users])
    exclude = [positives(samples, int(u), ("train",)) for u in users]
    ranked, scores = rank_items(model, users, histories, num_items=samples.num_items, exclude=exclude,
                                k=k, device=device)
    return {
        str(samples.user_ids[u]):
            [[int(samples.item_ids[i - 1]), round(float(s), 5)] for i, s in zip(r, sc)]
        for u, r, sc in zip(users, ranked, scores)
    }
