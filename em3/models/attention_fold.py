"""Few-query attention with the key and value projections folded into the queries (speed.fold_attention).

When a handful of queries attend to many keys (the Fusion-Q-Former's query rows over an item's 81
[queries; tokens] rows, or BLIP-2's queries over the tokens), projecting every key row to K and V costs
more than the attention itself. Per head h (Wk_h, Wv_h its (d, D) rows of the projections):

    score(x)     = q_h · (Wk_h x + bk_h) / sqrt(d) = (x · u_h + q_h · bk_h) / sqrt(d),   u_h = Wk_h^T q_h
    Σ_t a_t v_t  = Wv_h (Σ_t a_t x_t) + bv_h                                              (Σ_t a_t = 1)

so the layer reads the D-wide key rows against h·Q vectors u (one small bmm), softmaxes, takes the
attention-weighted sums of the key rows (another), and maps them through Wv once per (item, head, query).
The offset q_h · bk_h is the same for every key of a row. It cancels in the softmax, but is added, so bk
keeps its gradient (zero up to rounding), as in the plain path. The same function in another order of
additions (tests/models/test_speed_levers.py). No K or V tensor is built, and the scaled-dot-product
kernel is not called (its CPU backward zero-fills and accumulates (N, K, h, d) buffers).

Two entry points: `folded_attention` (any few-query Attention call, per-item queries) and
`shared_query_rows` (the one-layer, queries-only selfattn Fusion-Q-Former, whose queries are the same
parameters for every item: the scores become plain matmuls and [queries; tokens] is never built).
Measured: docs/RESULTS.md, Speed, session 15.

A peft LoRA layer on k_proj / v_proj folds as W + s·B A (em3/models/fold.py's `linear_weights`); with
dropout on an adapter's input the map is not linear, and the plain path runs instead.

Shape letters: N items, Q queries, K keys, D width, h heads, d = D / h.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn

from em3.models.fold import linear_weights

if TYPE_CHECKING:
    from em3.models.fusion import Attention, SelfAttnLayer


def _linear_map(layer: nn.Module) -> bool:
    """Whether `layer` computes x -> W x + b (a Linear, or a LoRA layer whose active adapters have no dropout)."""
    if not isinstance(layer, LoraLayer) or layer.disable_adapters or layer.merged:
        return True
    return all(isinstance(layer.lora_dropout[a], nn.Identity) for a in layer.active_adapters if a in layer.lora_A)


def pays(attn: "Attention", q_len: int) -> bool:
    """Whether the fold is the cheaper order here (h·Q score vectors narrower than D) and computes the
    same function (k_proj and v_proj are linear maps)."""
    return attn.num_heads * q_len < attn.q_proj.in_features and _linear_map(attn.k_proj) and _linear_map(attn.v_proj)


def _score_vectors(attn: "Attention", q: Tensor) -> tuple[Tensor, Tensor]:
    """Scaled queries q (..., Q, h, d) -> the score vectors u = Wk_h^T q_h (..., h·Q, D) and their offsets
    q_h · bk_h (..., h·Q), in k_proj's current map (adapters included)."""
    *lead, q_len, h, hd = q.shape
    wk, bk = linear_weights(attn.k_proj)                                    # (D, D), (D,)
    u = torch.einsum("...qhd,hde->...hqe", q, wk.view(h, hd, -1)).reshape(*lead, h * q_len, -1)
    offset = (torch.einsum("...qhd,hd->...hq", q, bk.view(h, hd)).reshape(*lead, h * q_len) if bk is not None
              else u.new_zeros(*lead, h * q_len))
    return u, offset


def _values(attn: "Attention", pooled: Tensor) -> Tensor:
    """Attention-weighted key rows (N, h·Q, D) -> the heads' outputs (N, Q, D) before out_proj: each head's
    value map Wv_h, plus bv (the weights of a row sum to 1)."""
    n, rows, dim = pooled.shape
    h = attn.num_heads
    wv, bv = linear_weights(attn.v_proj)                                    # (D, D), (D,)
    out = torch.einsum("nhqe,hde->nqhd", pooled.view(n, h, rows // h, dim), wv.view(h, dim // h, dim))
    out = out.reshape(n, rows // h, dim)
    return out + bv if bv is not None else out


def folded_attention(attn: "Attention", query: Tensor, key: Tensor, key_mask: Tensor, *,
                     need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """query (N, Q, D), key (N, K, D), key_mask (N, K) True = real -> the heads' outputs (N, Q, D) before
    out_proj, and the weights (N, h, Q, K) when `need_weights`; equal to Attention's plain path."""
    n, q_len, dim = query.shape
    h = attn.num_heads
    q = attn.q_proj(query).view(n, q_len, h, dim // h) / math.sqrt(dim // h)   # (N, Q, h, d), scaled as SDPA does
    # 1. one score vector per (item, head, query) in the key rows' own D-space
    u, offset = _score_vectors(attn, q)                                     # (N, h·Q, D), (N, h·Q)
    # 2. scores against every key row, masked softmax
    scores = torch.bmm(u, key.transpose(1, 2)) + offset[..., None]          # (N, h·Q, K)
    weights = scores.masked_fill(~key_mask[:, None, :], float("-inf")).softmax(dim=-1)
    # 3. attention-weighted key rows, then each head's value map
    out = _values(attn, torch.bmm(weights, key))                            # (N, Q, D)
    return out, (weights.view(n, h, q_len, -1) if need_weights else None)


def shared_query_rows(layer: "SelfAttnLayer", queries: Tensor, tokens: Sequence[Tensor], masks: Sequence[Tensor], *,
                      need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """A one-layer, queries-only selfattn Fusion-Q-Former's query rows, whose queries are the same parameters for
    every item: queries (Q, D), per modality tokens (N, T_m, D) and masks (N, T_m) -> the layer's output rows
    (N, Q, D) and, when `need_weights`, the weights (N, h, Q, Q + T) over [queries; tokens]; equal to
    SelfAttnLayer(x = [queries; tokens], rows = Q) (the same dropout draw).

    With shared queries the h·Q score vectors u are shared too, so each modality's scores are one plain matmul
    (N·T_m, D) x (D, h·Q), and neither [queries; tokens] nor the tokens of all modalities are concatenated:
    only the (N, h·Q, Q + T) scores are.
    """
    n = tokens[0].shape[0]
    u, offset, own = query_vectors(layer, queries)                          # (h·Q, D), (h·Q,), (h·Q, Q)
    # 1. scores: the queries' own as keys (the same for every item), then each modality's, keys last
    scores = [own[None].expand(n, -1, -1)]                                  # (N, h·Q, Q)
    for x, m in zip(tokens, masks):
        scores.append(masked_scores(x @ u.T + offset, m))                  # (N, h·Q, T_m)
    weights = torch.cat(scores, dim=2).softmax(dim=-1)                     # (N, h·Q, Q + T)
    # 2. attention-weighted keys (N, h·Q, D): the queries' part, then one bmm per modality
    pooled = weights[:, :, :queries.shape[0]] @ queries
    start = queries.shape[0]
    for x in tokens:
        pooled = pooled + torch.bmm(weights[:, :, start:start + x.shape[1]], x)
        start += x.shape[1]
    # 3. each head's value map, out_proj, residual and post-norm
    rows = query_rows(layer, queries, pooled)                               # (N, Q, D)
    return rows, (weights.view(n, layer.attn.num_heads, queries.shape[0], -1) if need_weights else None)


def query_vectors(layer: "SelfAttnLayer", queries: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The shared queries (Q, D) -> their score vectors u (h·Q, D), offsets (h·Q,), and their scores against
    themselves as keys (h·Q, Q), in the layer's current maps (one path's parameters)."""
    attn = layer.attn
    nq, dim = queries.shape
    q = attn.q_proj(queries).view(nq, attn.num_heads, dim // attn.num_heads) / math.sqrt(dim // attn.num_heads)
    u, offset = _score_vectors(attn, q)                                     # (h·Q, D), (h·Q,)
    return u, offset, u @ queries.T + offset[:, None]


def masked_scores(s: Tensor, mask: Tensor) -> Tensor:
    """Token-major scores (N, T_m, R) and the tokens' mask (N, T_m) -> (N, R, T_m), -inf at padding."""
    return s.transpose(1, 2).masked_fill(~mask[:, None, :], float("-inf"))


def query_rows(layer: "SelfAttnLayer", queries: Tensor, pooled: Tensor) -> Tensor:
    """Attention-weighted keys (N, h·Q, D) -> the layer's query rows (N, Q, D): each head's value map, out_proj,
    dropout (one draw of (N, Q, D)), residual and post-norm, as SelfAttnLayer."""
    return layer.norm(queries + layer.dropout(layer.attn.out_proj(_values(layer.attn, pooled))))
