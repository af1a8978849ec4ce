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
    """Item indices the user clicked in the given splits (splits the data lacks are skipped)."""
    parts = [samples.splits[s] for s in splits if s in samples.splits]
    if not parts:
        return set()
    rows = np.concatenate(parts)
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


def first_test_row(samples: SampleSet, user: int) -> int | None:
    """The row of the user's first (warm) test sample, where their test period starts; None without one."""
    rows = samples.splits.get("test", np.zeros(0, dtype=np.int64))
    rows = rows[samples.user[rows] == user]
    return int(rows[np.argmin(samples.timestamp[rows])]) if len(rows) else None


def held_out_input(samples: SampleSet, user: int) -> tuple[np.ndarray, set[int]]:
    """(history (L,), excluded item indices) to score a user as the model stood before their test period.

    History = the one of the user's first test sample (positives strictly before it); excluded =
    the user's train and val positives and any earlier positive (e.g. a cold item), as in evaluate_topk.
    A user without test samples has no held-out period: latest history, every positive excluded.
    """
    mine = np.flatnonzero((samples.user == user) & (samples.label > 0.5))       # the user's positive rows
    first = first_test_row(samples, user)
    if first is None:
        return latest_history(samples, user), {int(i) for i in samples.item[mine]}
    earlier = {int(i) for i in samples.item[mine[samples.timestamp[mine] < samples.timestamp[first]]]}
    return samples.history[first].astype(np.int64), positives(samples, user, ("train", "val")) | earlier


@torch.no_grad()
def rank_items(model: nn.Module, users: np.ndarray, histories: np.ndarray, *, num_items: int,
               exclude: list[set[int]], k: int, device: torch.device,
               user_chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices (U, k) and their logits (U, k) over all items 1..I, minus each user's excluded set.

    The catalogue's content is encoded once (`EM3Model.catalogue`), and where it pays DIN's attention
    scores of every (item, history item) pair once (`EM3Model.pair_scores`); then the ranker scores every
    (user, item) pair of a chunk of users at once (`EM3Model.score_catalogue`).
    """
    was_training = model.training
    model.eval()
    top_items, top_scores = [], []
    try:
        catalogue = model.catalogue()
        pair_scores = model.pair_scores(catalogue, rows=len(users), history_len=histories.shape[1])
        for a in range(0, len(users), user_chunk):
            u = torch.as_tensor(users[a:a + user_chunk], device=device)       # (B,)
            h = torch.as_tensor(histories[a:a + user_chunk], device=device)   # (B, L)
            s = model.score_catalogue(u, h, catalogue, pair_scores).float().cpu().numpy()  # (B, I)
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


def topk_users(samples: SampleSet, *, sample: int = 0, seed: int = 0) -> np.ndarray:
    """User indices with a test positive, sorted; `sample` > 0 keeps a fixed seeded sample of that many."""
    test = samples.splits.get("test", np.zeros(0, dtype=np.int64))
    users = np.unique(samples.user[test[samples.label[test] > 0.5]])
    if 0 < sample < len(users):
        users = np.sort(np.random.default_rng([seed, 7919]).choice(users, size=sample, replace=False))
    return users


def evaluate_topk(model: nn.Module, samples: SampleSet, *, k: int, device: torch.device,
                  users: np.ndarray | None = None) -> dict[str, float]:
    """test/recall_at_k and test/ndcg_at_k (MLflow forbids "@" in names): rank the catalogue for each user with test positives.

    History = the one of the user's first test sample; excluded = the user's train and val positives.
    `users` (from `topk_users`) restricts the ranking to those users; also reported: test/topk_users, how many.
    """
    test = samples.splits.get("test", np.zeros(0, dtype=np.int64))
    test = test[samples.label[test] > 0.5]
    users = topk_users(samples) if users is None else users
    if len(users) == 0:
        return {f"test/recall_at_{k}": float("nan"), f"test/ndcg_at_{k}": float("nan"), "test/topk_users": 0.0}
    histories, relevant, exclude = [], [], []
    for u in users:
        rows = test[samples.user[test] == u]
        first = rows[np.argmin(samples.timestamp[rows])]
        histories.append(samples.history[first])
        relevant.append(set(int(i) for i in samples.item[rows]))
        exclude.append(positives(samples, int(u), ("train", "val")) - relevant[-1])
    ranked, _ = rank_items(model, users, np.stack(histories), num_items=samples.num_items, exclude=exclude,
                           k=k, device=device)
    return {f"test/recall_at_{k}": recall_at_k(ranked, relevant, k), f"test/ndcg_at_{k}": ndcg_at_k(ranked, relevant, k),
            "test/topk_users": float(len(users))}


def recommend(model: nn.Module, samples: SampleSet, users: np.ndarray, *, k: int,
              device: torch.device) -> dict[str, list[list[float]]]:
    """{original user_id: [[item_id, score], ...]} top-k as of each user's test period (`held_out_input`).

    Scored from the history before the period with the earlier positives excluded, so a test-period
    positive in the list is an item the model was not handed.
    """
    inputs = [held_out_input(samples, int(u)) for u in users]
    histories = np.stack([h for h, _ in inputs])
    exclude = [ex for _, ex in inputs]
    ranked, scores = rank_items(model, users, histories, num_items=samples.num_items, exclude=exclude,
                                k=k, device=device)
    return {
        str(samples.user_ids[u]):
            [[int(samples.item_ids[i - 1]), round(float(s), 5)] for i, s in zip(r, sc)]
        for u, r, sc in zip(users, ranked, scores)
    }
