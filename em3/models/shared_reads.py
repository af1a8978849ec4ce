"""The target and history paths read the targets' projected tokens together (speed.shared_token_reads).

Under lora with one projection per item (speed.project_once), a batch's target items have one set of
projected tokens X (N, T_m, D) per modality, and both paths attend over it: the target path with its
score vectors u_t (gradient into X, and on into the projection), the history path, for the targets that
are also history items, with u_h (its gradient stopped at X: only the adapters train). Folded
(em3/models/attention_fold.py), each path reads X twice forward (the scores X u^T, the weighted sums
A X) and twice backward (u's gradient, A's gradient). Here the paths' score vectors are stacked,
(h·Q, D) each, so every one of those reads serves both paths, and the history path needs no gathered
copy of the targets' tokens. The backward returns X's gradient from the first path's rows alone: the
history path's stop-gradient is kept. The same function in another order of additions
(tests/models/test_speed_levers.py); measured in docs/RESULTS.md, Speed, session 16.

Shape letters: N items, T_m tokens of modality m, Q queries, R = h·Q score vectors of one path, P paths, D width.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from em3.models.attention_fold import masked_scores

# One path's shared-query vectors: queries (Q, D), score vectors u (R, D), offsets (R,), own scores (R, Q)
PathVectors = tuple[Tensor, Tensor, Tensor, Tensor]


class _StackedScores(torch.autograd.Function):
    """x (N, T, D), u (P·R, D) -> x u^T (N, T, P·R); x's gradient from u's first `rows` rows only."""

    @staticmethod
    def forward(ctx, x: Tensor, u: Tensor, rows: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, u)
        ctx.rows = rows
        return x @ u.T

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        x, u = ctx.saved_tensors
        gx = grad[..., :ctx.rows] @ u[:ctx.rows] if ctx.needs_input_grad[0] else None              # (N, T, D)
        gu = grad.reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        return gx, gu, None


class _StackedPool(torch.autograd.Function):
    """a (N, P·R, T), x (N, T, D) -> a x (N, P·R, D); x's gradient from a's first `rows` rows only."""

    @staticmethod
    def forward(ctx, a: Tensor, x: Tensor, rows: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, x)
        ctx.rows = rows
        return torch.bmm(a, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        a, x = ctx.saved_tensors
        ga = torch.bmm(grad, x.transpose(1, 2)) if ctx.needs_input_grad[0] else None                # (N, P·R, T)
        gx = (torch.bmm(a[:, :ctx.rows].transpose(1, 2), grad[:, :ctx.rows])
              if ctx.needs_input_grad[1] else None)                                                # (N, T, D)
        return ga, gx, None


def stacked_pooled(paths: Sequence[PathVectors], tokens: Sequence[Tensor], masks: Sequence[Tensor]) -> list[Tensor]:
    """Each path's attention-weighted keys over the same items: per path (N, R, D), as attention_fold's
    shared_query_rows computes them before its value map, with one read of each modality's tokens
    (N, T_m, D) per matmul for all paths. The tokens' gradient comes from the first path alone."""
    n, r = tokens[0].shape[0], paths[0][1].shape[0]
    u = torch.cat([p[1] for p in paths])                                    # (P·R, D)
    offset = torch.cat([p[2] for p in paths])                               # (P·R,)
    # 1. scores: the queries' own (the same for every item), then each modality's; each row softmaxes alone,
    # so one softmax serves every path
    scores = [torch.cat([p[3] for p in paths])[None].expand(n, -1, -1)]    # (N, P·R, Q)
    for x, m in zip(tokens, masks):
        scores.append(masked_scores(_StackedScores.apply(x, u, r) + offset, m))   # (N, P·R, T_m)
    weights = torch.cat(scores, dim=2).softmax(dim=-1)                     # (N, P·R, Q + T)
    # 2. attention-weighted keys: each path's own queries (their gradients apart), then the shared tokens
    nq = paths[0][0].shape[0]
    pooled = torch.cat([weights[:, i * r:(i + 1) * r, :nq] @ p[0] for i, p in enumerate(paths)], dim=1)
    start = nq
    for x in tokens:
        pooled = pooled + _StackedPool.apply(weights[:, :, start:start + x.shape[1]], x, r)   # (N, P·R, D)
        start += x.shape[1]
    return list(pooled.split(r, dim=1))
