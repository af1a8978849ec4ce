"""Which history items a target sees: the last K, or the K most similar to the target (a retrieval-style cut).

Long-sequence CTR models (SIM, ETA, TWIN) keep a long behaviour sequence but let the target attend only to
the few items a cheap search finds relevant, so attention and content cost stay O(K). Here the search is a
dot product of frozen-in-the-step (detached) item-ID embeddings: `similar` keeps, per target, the K history
items whose ID embedding is closest to the target's; `last` keeps the K most recent (the baseline at equal
K over the same data.max_history window). Cut items become padding, so the content path never encodes them.

Shape letters: B rows, C candidates, L history length, Di item-ID size. Histories are left-padded, most
recent last (em3.data.samples).
"""
from __future__ import annotations

import torch
from torch import Tensor


def keep_last(mask: Tensor, k: int) -> Tensor:
    """mask (B, L) real items -> (B, L): the last k positions' real items (all of them when k <= 0)."""
    if k <= 0:
        return mask
    n_l = mask.shape[-1]
    recent = torch.arange(n_l, device=mask.device) >= n_l - k                 # (L,)
    return mask & recent


def keep_top(scores: Tensor, mask: Tensor, k: int) -> Tensor:
    """scores (..., L), mask broadcastable to it -> (..., L): per row the k highest-scoring real items
    (every real item when a row has at most k)."""
    mask = mask.expand_as(scores)
    if k <= 0 or k >= scores.shape[-1]:
        return mask
    masked = scores.masked_fill(~mask, float("-inf"))
    top = masked.topk(k, dim=-1).indices                                       # (..., k)
    kept = torch.zeros_like(mask).scatter(-1, top, True)
    return kept & mask                                                          # -inf picks on short rows are padding


@torch.no_grad()
def cut_mask(target_id: Tensor, history_id: Tensor, mask: Tensor, *, cut: str, k: int,
             pairs: bool = False) -> Tensor:
    """The history each target attends to (`cut` as validated by model.history.cut).

    target_id (B, Di), history_id (B, L, Di), mask (B, L) -> (B, L);
    with `pairs`, target_id (C, Di) are candidates for every row: similar -> (B, C, L); last, which does not
    depend on the target, stays (B, L) (the rankers' score_pairs take either).
    """
    if cut == "last" or k <= 0:
        return keep_last(mask, k)
    if pairs:
        scores = torch.einsum("cd,bld->bcl", target_id, history_id)             # (B, C, L)
        return keep_top(scores, mask[:, None], k)
    scores = torch.einsum("bd,bld->bl", target_id, history_id)                 # (B, L)
    return keep_top(scores, mask, k)
