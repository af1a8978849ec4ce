"""The token projection folded into a one-layer, queries-only `selfattn` Fusion-Q-Former (speed.fold_token_proj).

When the only layer computes the query rows alone (speed.queries_only_last_layer), every projected token
P x + c enters that layer only as a key Wk(P x + c) + bk and a value Wv(P x + c) + bv of the queries,
which are parameters shared by every item. So, per head h and query i (q = Wq·query + bq, scaled):

    score(token x) = x · (P^T Wk_h^T q_hi) + q_hi · (Wk_h c + bk_h)         -> one C-vector g_hi per step
    Σ_t a_t v_t    = (Wv_h P) (Σ_t a_t x_t) + (Σ_t a_t)(Wv_h c + bv_h)      -> one C-vector z_hi per item

The layer then reads each item's T raw C-wide tokens against h·Nq vectors instead of first projecting all
T of them to D: for MovieLens (text 64 x 384, image 15 x 1,280, D 64, h·Nq 8) 37% fewer FLOPs a step,
and the [N, T, D] projected tokens are never built. The same function, in another order of additions
(results agree to float rounding; tests/models/test_speed_levers.py), drawing the same dropout masks.

Measured on a 2-core AVX2 CPU (docs/RESULTS.md, Speed, session 12): no faster. The plain projection is a
compute-efficient matmul (K = 384 / 1,280), while the fold makes four memory-bound passes over the raw
tokens (scores and weighted sums, forward and backward). Sharing those passes between the target and
the LoRA history path (`attend` takes several paths' vectors) was slower still. Off by default.

Three stages: `fold_weights` (in the path's parameter context), `attend` (the passes), `finish`.

Shape letters: N items, T_m tokens of modality m, C_m their width, Nq queries, h heads, d head size, D,
P paths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn

from em3.config import ConfigError

if TYPE_CHECKING:
    from em3.models.fusion import FusionQFormer


@dataclass
class FoldedLayer:
    """One path's layer, folded: what the passes over the raw tokens need (each h·Nq row = one (head, query))."""

    g: dict[str, Tensor]        # per modality (h·Nq, C_m): the score vectors P^T Wk_h^T q_hi (scaled)
    beta: dict[str, Tensor]     # per modality (h·Nq, 1): the score offsets q_hi · (Wk_h c + bk_h)
    v_map: dict[str, Tensor]    # per modality (h, d, C_m): Wv_h P
    v_bias: dict[str, Tensor]   # per modality (h, d): Wv_h c + bv_h
    s_q: Tensor                 # (h·Nq, Nq) scores of the queries as keys
    v_q: Tensor                 # (h, Nq, d) values of the queries
    dtypes: dict[str, torch.dtype]   # per modality: the projection's compute dtype


def linear_weights(layer: nn.Module) -> tuple[Tensor, Tensor | None]:
    """(W (out, in), b) of a Linear as it computes now; for a peft LoRA layer with its adapters on,
    W + s·B A of each active adapter (gradient reaches A and B through it)."""
    if not isinstance(layer, LoraLayer):
        return layer.weight, layer.bias
    base = layer.base_layer
    w = base.weight
    if not layer.disable_adapters and not layer.merged:
        for name in layer.active_adapters:
            if name not in layer.lora_A:
                continue
            if not isinstance(layer.lora_dropout[name], nn.Identity):
                raise ConfigError("speed.fold_token_proj: needs model.history.lora_dropout = 0 (dropout on an "
                                  "adapter's input is not a linear map)")
            w = w + layer.scaling[name] * (layer.lora_B[name].weight @ layer.lora_A[name].weight)
    return w, base.bias


def foldable(fusion: "FusionQFormer") -> bool:
    """Whether `fusion` computes the function the fold reproduces: selfattn, one layer computing the query
    rows only, and every modality projected by a Linear alone (prenormed tokens, no trainable top)."""
    return (fusion.mode == "selfattn" and len(fusion.layers) == 1 and fusion.queries_only_last_layer
            and all(isinstance(p.norm, nn.Identity) and p.top_activation is None for p in fusion.proj.values()))


def fold_weights(fusion: "FusionQFormer") -> FoldedLayer:
    """The fold of `fusion`'s layer with its parameters as they are now (adapters on or off)."""
    attn = fusion.layers[0].attn
    h, (nq, dim) = attn.num_heads, fusion.queries.shape
    hd = dim // h
    query = fusion.queries                                                  # (Nq, D)
    wk, bk = linear_weights(attn.k_proj)
    wv, bv = linear_weights(attn.v_proj)
    q = attn.q_proj(query).view(nq, h, hd).transpose(0, 1) / math.sqrt(hd)  # (h, Nq, d), scaled as SDPA does
    k_q = attn.k_proj(query).view(nq, h, hd).transpose(0, 1)               # (h, Nq, d)
    v_q = attn.v_proj(query).view(nq, h, hd).transpose(0, 1)               # (h, Nq, d)
    wk_h, wv_h = wk.view(h, hd, dim), wv.view(h, hd, dim)                   # (h, d, D)
    out = FoldedLayer({}, {}, {}, {}, torch.einsum("hid,hjd->hij", q, k_q).reshape(h * nq, nq), v_q, {})
    for m in fusion.modalities:
        p, c = linear_weights(fusion.proj[m].token_proj)                    # (D, C_m), (D,)
        out.g[m] = torch.einsum("hid,hdc->hic", q, wk_h @ p).reshape(h * nq, -1)
        out.beta[m] = torch.einsum("hid,hd->hi", q, (wk @ c + bk).view(h, hd)).reshape(h * nq, 1)
        out.v_map[m] = wv_h @ p
        out.v_bias[m] = (wv @ c + bv).view(h, hd)
        out.dtypes[m] = fusion.proj[m].compute_dtype
    return out


def attend(paths: Sequence[FoldedLayer], inputs: Mapping[str, tuple[Tensor, Tensor]]) -> list[Tensor]:
    """{modality: (tokens (N, T_m, C_m), mask (N, T_m))} -> per path the attention output (N, h, Nq, d) of
    the queries over [queries; every modality's tokens]. Two passes over the tokens forward (scores, weighted
    sums) and two backward, for all paths at once."""
    h, nq, hd = paths[0].v_q.shape
    rows = h * nq
    n_p = len(paths)
    mods = list(paths[0].g)
    n = inputs[mods[0]][0].shape[0]
    scores = [torch.cat([p.s_q for p in paths])[None].expand(n, -1, -1)]   # (N, P·h·Nq, Nq)
    for m in mods:
        x, mask = inputs[m]
        x = x.to(paths[0].dtypes[m])                                        # (N, T_m, C_m)
        g = torch.cat([p.g[m] for p in paths]).to(x.dtype)                  # (P·h·Nq, C_m)
        s = (x @ g.T).float().transpose(1, 2) + torch.cat([p.beta[m] for p in paths])   # (N, P·h·Nq, T_m)
        scores.append(s.masked_fill(~mask.bool()[:, None, :], float("-inf")))
    a = torch.cat(scores, dim=-1).softmax(dim=-1)                           # (N, P·h·Nq, Nq + T)

    a_q = a[..., :nq].reshape(n, n_p, h, nq, nq)
    outs = [torch.einsum("nhij,hjd->nhid", a_q[:, i], p.v_q) for i, p in enumerate(paths)]   # (N, h, Nq, d)
    start = nq
    for m in mods:
        x = inputs[m][0].to(paths[0].dtypes[m])
        a_m = a[..., start:start + x.shape[1]]                              # (N, P·h·Nq, T_m)
        start += x.shape[1]
        z = torch.bmm(a_m.to(x.dtype), x).view(n, n_p, h, nq, -1)           # (N, P, h, Nq, C_m)
        mass = a_m.sum(-1).view(n, n_p, h, nq, 1)                           # (N, P, h, Nq, 1)
        for i, p in enumerate(paths):
            outs[i] = (outs[i] + torch.einsum("nhic,hdc->nhid", z[:, i], p.v_map[m].to(x.dtype)).float()
                       + mass[:, i] * p.v_bias[m][None, :, None, :])
    return [o.view(n, h, nq, hd) for o in outs]


def finish(fusion: "FusionQFormer", out: Tensor) -> Tensor:
    """A path's attention output (N, h, Nq, d) -> (N, D): the layer's out_proj, residual and norm, then the
    fusion's out_proj, as SelfAttnLayer and FusionQFormer compute them."""
    layer = fusion.layers[0]
    n, _, nq, _ = out.shape
    out = layer.attn.out_proj(out.transpose(1, 2).reshape(n, nq, -1))       # (N, Nq, D)
    q_rows = layer.norm(fusion.queries + layer.dropout(out))                # (N, Nq, D)
    return fusion.out_proj(q_rows.reshape(n, -1))                           # (N, Nq·D) -> (N, D)


def folded_embedding(fusion: "FusionQFormer", inputs: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
    """{modality: (tokens, mask)} -> (N, D), equal to the plain `fusion(inputs).embedding`."""
    return finish(fusion, attend([fold_weights(fusion)], inputs)[0])
