"""Ranking models that score (user, target, history) from ID and content embeddings: DIN and DCN-v2.

The user input is one vector: the user-ID embedding, with the user-feature embeddings appended when on.

Independent of the content module: content inputs are None for the ID-only arm. Each ranker also
scores every (user, candidate) pair at once (`score_pairs`) for top-K ranking of a catalogue.
Shape letters: B rows (users in score_pairs), C candidates, L history length, Du user / Di item-ID /
Dc content sizes, H DIN attention hidden size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from em3.config import RankerConfig
from em3.models.dropout import FastDropout, relu_dropout


# Elements of the largest (B, C, L, max(D, H)) block score_pairs builds at once.
PAIR_BLOCK = 1 << 23


@dataclass(frozen=True)
class PairScores:
    """DIN's attention scores of every candidate against every history-table row, per unit: (C, U) each."""
    id: Tensor
    content: Tensor | None


@dataclass
class RankerOutput:
    logits: Tensor                          # (B,)
    attention: Tensor | None                # (B, L) DIN's ID attention over the history (0 on padding); None for DCN-v2
    content_attention: Tensor | None = None  # (B, L) DIN's content attention; None without content or for DCN-v2


def mlp(in_dim: int, hidden: Sequence[int], *, dropout: float) -> tuple[nn.Sequential, int]:
    """Linear-ReLU-Dropout stack; returns it and its output size."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = h
    return nn.Sequential(*layers), in_dim


def gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """table (U, D), index (...) -> table[index] (..., D) by index_select, whose backward (an index_add) is about
    2x faster on the CPU than indexing's (an index_put with accumulation) for (1024, 50) rows of 64."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[-1])


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """x (B, L, D), mask (B, L) -> (B, D); an empty history pools to zeros."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class TargetAttention(nn.Module):
    """DIN's activation unit: an MLP over [q, k, q-k, q*k] scores each history item against the target.

    With `split` the first layer is applied as (W1+W3)q + (W2-W3)k + W4(q*k), W = [W1 W2 W3 W4]: the same
    function with the same parameters, but the target term is computed once per row (or candidate),
    not once per history item, and the 4D-wide concatenation is never built.
    With `fused` (speed.din_fused_unit) the same function in fewer passes over the (B, L, H) tensors: each
    ReLU + dropout one masked select with the dropout's scale folded into the next weight (it needs
    FastDropout's masks, else the plain layers run), and the table keys gathered by index_select.
    (The interest as a batched matmul, (B, 1, L) x (B, L, D), was tried: slower than the broadcast sum on the CPU.)
    """

    def __init__(self, dim: int, *, hidden: Sequence[int], dropout: float, split: bool = False, fused: bool = False,
                 packed: bool = False):
        super().__init__()
        body, out = mlp(4 * dim, hidden, dropout=dropout)
        self.score = nn.Sequential(body, nn.Linear(out, 1))
        self.dim = dim
        self.split = split
        self.fused = fused
        self.packed = packed

    def _first_layer_parts(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(W1+W3, W2-W3, W4, b) of the first Linear, each (H, D) and b (H,)."""
        first = self.score[0][0]
        w1, w2, w3, w4 = first.weight.split(self.dim, dim=1)
        return w1 + w3, w2 - w3, w4, first.bias

    def _fusable(self) -> bool:
        """Whether every dropout of the score MLP draws FastDropout's masks (or drops nothing), so the fused
        and packed paths can draw the same masks themselves."""
        return all(isinstance(d, FastDropout) or d.p == 0.0 or not d.training for d in list(self.score[0])[2::3])

    def _rest(self, h: Tensor, *, packed: tuple[tuple[int, int], Tensor] | None = None) -> Tensor:
        """The layers after the first Linear: (..., H) -> (...,) scores. `packed` = ((B, L), positions (R,)):
        h holds only those flat (row, slot) positions of a (B, L, H) block, (R, H); each dropout then draws
        its mask for the whole block and keeps the positions' rows (the same draw as unpacked)."""
        layers = list(self.score[0])[1:]                                   # (ReLU, dropout, Linear) ..., ReLU, dropout
        if self.fused and self._fusable():
            # speed.din_fused_unit: each ReLU + dropout one masked select, the dropout's scale in the next weight
            for relu_drop, linear in zip(layers[1::3], [*layers[2::3], self.score[1]]):
                h, scale = relu_dropout(h, relu_drop, block=packed)
                h = F.linear(h, linear.weight * scale, linear.bias)
            return h.squeeze(-1)
        for layer in layers:
            h = layer(h)
        return self.score[1](h).squeeze(-1)

    @staticmethod
    def _weights(s: Tensor, mask: Tensor) -> Tensor:
        """Scores (..., L) and mask (..., L) -> attention weights (..., L).

        Departure from DIN: softmax-normalised weights (DIN sums unnormalised scores), which keeps the
        interest on one scale whatever the history length; padding gets exactly 0, an empty history 0s.
        """
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
        return s.softmax(dim=-1) * mask.to(s.dtype)

    def forward(self, target: Tensor, history: Tensor | None, mask: Tensor, *,
                rows: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """target (B, D), history (B, L, D), mask (B, L) -> interest (B, D), weights (B, L); history may be None
        when `rows` is given.

        `rows` = (table (U, D), index (B, L)) with history == table[index] (an embedding table, or a batch's
        unique items): split, the key term (W2-W3)k + b is computed once per table row and gathered, not
        once per (row, history item). Exact."""
        if self.split and self.fused and self.packed and self._fusable():
            return self._packed(target, history, mask, rows)
        if history is None:   # given as rows alone (EM3Model with speed.din_table_keys): gathered here
            history = gather_rows(*rows)
        if self.split:
            wq, wk, wqk, b = self._first_layer_parts()
            if rows is None:
                keys = F.linear(history, wk, b)                                 # (B, L, H)
            else:
                keys = F.linear(rows[0], wk, b)
                keys = gather_rows(keys, rows[1]) if self.fused else keys[rows[1]]   # (B, L, H)
            h = (F.linear(target, wq).unsqueeze(1) + keys
                 + F.linear(target.unsqueeze(1) * history, wqk))                 # (B, L, H)
            s = self._rest(h)                                                   # (B, L)
        else:
            q = target.unsqueeze(1).expand_as(history)                          # (B, L, D)
            s = self.score(torch.cat([q, history, q - history, q * history], dim=-1)).squeeze(-1)  # (B, L)
        w = self._weights(s, mask)                                              # (B, L)
        return (w.unsqueeze(-1) * history).sum(1), w

    def _packed(self, target: Tensor, history: Tensor | None, mask: Tensor,
                rows: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        """forward over the real history items alone (speed.din_pack_history): the split first layer, the MLP
        and the interest on the R = mask.sum() (row, item) pairs, not on all B·L (about 40% of MovieLens's
        are padding, whose weights are 0 anyway); the scores are scattered back for the (B, L) softmax.
        The dropout masks are drawn for the whole (B, L, H) block, as unpacked. Exact (to float rounding)."""
        wq, wk, wqk, b = self._first_layer_parts()
        n_b, n_l = mask.shape
        pos = mask.reshape(-1).nonzero().squeeze(1)                             # (R,) flat (row, slot)
        row = pos // n_l                                                        # (R,)
        if rows is None:
            k = history.reshape(n_b * n_l, -1).index_select(0, pos)             # (R, D)
            keys = F.linear(k, wk, b)                                           # (R, H)
        else:
            item = rows[1].reshape(-1).index_select(0, pos)                     # (R,) table rows
            k = rows[0].index_select(0, item)                                   # (R, D)
            keys = F.linear(rows[0], wk, b).index_select(0, item)               # (R, H)
        h = (F.linear(target, wq).index_select(0, row) + keys
             + F.linear(target.index_select(0, row) * k, wqk))                  # (R, H)
        s = self._rest(h, packed=((n_b, n_l), pos))                             # (R,)
        full = s.new_full((n_b * n_l,), torch.finfo(s.dtype).min).scatter(0, pos, s)   # (B*L,)
        w = self._weights(full.view(n_b, n_l), mask)                            # (B, L)
        weighted = w.reshape(-1).index_select(0, pos).unsqueeze(-1) * k         # (R, D)
        return k.new_zeros(n_b, k.shape[-1]).index_add(0, row, weighted), w     # (B, D), (B, L)

    def pair_scores(self, target: Tensor, table: Tensor) -> Tensor:
        """Every candidate against every table row: target (C, D), table (U, D) -> the unit's scores (C, U),
        before the softmax. The unit reads the (target, history item) pair alone, so over a catalogue these
        scores serve every user whose history is drawn from `table` (`pairwise`'s `scores`). The split form;
        candidates in blocks of bounded memory."""
        wq, wk, wqk, b = self._first_layer_parts()
        tq, keys = F.linear(target, wq), F.linear(table, wk, b)                # (C, H), (U, H)
        step = max(1, PAIR_BLOCK // max(1, table.shape[0] * max(table.shape[1], wq.shape[0])))
        out = []
        for start, t in zip(range(0, target.shape[0], step), target.split(step)):   # (c, D)
            h = tq[start:start + len(t), None] + keys + F.linear(t[:, None] * table, wqk)   # (c, U, H)
            out.append(self._rest(h))                                           # (c, U)
        return torch.cat(out)

    def pairwise(self, target: Tensor, history: Tensor, mask: Tensor, *,
                 scores: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Every candidate against every row's history: target (C, D), history (B, L, D), mask (B, L), or
        (B, C, L) when each candidate sees its own cut of the history -> interest (B, C, D). Always the
        split form; candidates in blocks of bounded memory.

        `scores` = (pair_scores(target, table) (C, U), index (B, L)) with history == table[index]: the unit's
        scores are gathered, not computed per (row, candidate, history item) (speed.din_pair_scores). Exact."""
        if scores is not None:
            table_scores, index = scores
            n_b, n_l = index.shape
            step = max(1, PAIR_BLOCK // max(1, n_b * n_l * history.shape[-1]))
            out = []
            for start in range(0, target.shape[0], step):
                s = table_scores[start:start + step, index].permute(1, 0, 2)     # (B, c, L)
                m = mask[:, None] if mask.dim() == 2 else mask[:, start:start + step]
                out.append(torch.einsum("bcl,bld->bcd", self._weights(s, m), history))   # (B, c, D)
            return torch.cat(out, dim=1)
        wq, wk, wqk, b = self._first_layer_parts()
        n_b, n_l, d = history.shape
        hk = F.linear(history, wk, b).unsqueeze(1)                              # (B, 1, L, H)
        step = max(1, PAIR_BLOCK // max(1, n_b * n_l * max(d, wq.shape[0])))
        out = []
        for start, t in zip(range(0, target.shape[0], step), target.split(step)):   # (c, D)
            h = (F.linear(t, wq)[None, :, None, :] + hk
                 + F.linear(t[None, :, None, :] * history[:, None], wqk))      # (B, c, L, H)
            m = mask[:, None] if mask.dim() == 2 else mask[:, start:start + len(t)]    # (B, 1 | c, L)
            w = self._weights(self._rest(h), m)                                 # (B, c, L)
            out.append(torch.einsum("bcl,bld->bcd", w, history))                # (B, c, D)
        return torch.cat(out, dim=1)


class DIN(nn.Module):
    """Deep Interest Network: target attention over the ID history and over the content history, then an MLP."""

    def __init__(self, cfg: RankerConfig, *, user_dim: int, id_dim: int, content_dim: int, split: bool = False,
                 fused: bool = False, packed: bool = False):
        super().__init__()
        att = dict(hidden=cfg.attention_hidden, dropout=cfg.dropout, split=split, fused=fused, packed=packed)
        self.id_attention = TargetAttention(id_dim, **att)
        self.content_attention = TargetAttention(content_dim, **att) if content_dim else None
        body, out = mlp(user_dim + 2 * id_dim + 2 * content_dim, cfg.mlp_hidden, dropout=cfg.dropout)
        self.head = nn.Sequential(body, nn.Linear(out, 1))

    def forward(self, user: Tensor, target_id: Tensor, *, history_id: Tensor | None, history_mask: Tensor,
                target_content: Tensor | None = None, history_content: Tensor | None = None,
                history_id_rows: tuple[Tensor, Tensor] | None = None,
                history_content_rows: tuple[Tensor, Tensor] | None = None) -> RankerOutput:
        """`history_*_rows`: (table, index) the history was gathered from (TargetAttention's `rows`), or None;
        with them the history tensors may be None (gathered only where a unit needs them)."""
        id_interest, w = self.id_attention(target_id, history_id, history_mask, rows=history_id_rows)  # (B, Di), (B, L)
        parts = [user, target_id, id_interest]
        wc = None
        if self.content_attention is not None:
            content_interest, wc = self.content_attention(target_content, history_content, history_mask,
                                                          rows=history_content_rows)
            parts += [target_content, content_interest]
        return RankerOutput(self.head(torch.cat(parts, dim=-1)).squeeze(-1), w, wc)

    def pair_scores(self, target_id: Tensor, id_table: Tensor, target_content: Tensor | None = None,
                    content_table: Tensor | None = None) -> PairScores:
        """Both attention units' scores of every candidate (C, ·) against every table row (U, ·), for
        `score_pairs` over histories gathered from those tables (TargetAttention.pair_scores)."""
        content = (self.content_attention.pair_scores(target_content, content_table)
                   if self.content_attention is not None else None)
        return PairScores(self.id_attention.pair_scores(target_id, id_table), content)

    def score_pairs(self, user: Tensor, target_id: Tensor, *, history_id: Tensor, history_mask: Tensor,
                    target_content: Tensor | None = None, history_content: Tensor | None = None,
                    scores: PairScores | None = None, history_index: Tensor | None = None) -> Tensor:
        """user (B, Du), candidates target_id (C, Di) [+ target_content (C, Dc)], histories (B, L, ·)
        -> logits (B, C) of every (row, candidate) pair; equals forward on the expanded rows. With `scores`
        (from `pair_scores`) and history_index (B, L), the histories' rows in its tables, the units'
        scores are gathered from them."""
        n_b, n_c = user.shape[0], target_id.shape[0]
        id_scores = None if scores is None else (scores.id, history_index)
        parts = [user[:, None].expand(-1, n_c, -1), target_id[None].expand(n_b, -1, -1),
                 self.id_attention.pairwise(target_id, history_id, history_mask, scores=id_scores)]   # (B, C, ·)
        if self.content_attention is not None:
            content_scores = None if scores is None else (scores.content, history_index)
            parts += [target_content[None].expand(n_b, -1, -1),
                      self.content_attention.pairwise(target_content, history_content, history_mask,
                                                      scores=content_scores)]
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)                             # (B, C)


class DCNv2(nn.Module):
    """DCN-v2 (parallel form): full-rank cross network and a deep MLP over [user, target, pooled histories]."""

    def __init__(self, cfg: RankerConfig, *, user_dim: int, id_dim: int, content_dim: int):
        super().__init__()
        d0 = user_dim + 2 * id_dim + 2 * content_dim
        self.cross = nn.ModuleList(nn.Linear(d0, d0) for _ in range(cfg.cross_layers))
        self.deep, deep_out = mlp(d0, cfg.mlp_hidden, dropout=cfg.dropout)
        self.head = nn.Linear(d0 + deep_out, 1)

    def _logits(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x                                           # x_{l+1} = x0 ⊙ (W x_l + b) + x_l
        return self.head(torch.cat([x, self.deep(x0)], dim=-1)).squeeze(-1)

    def forward(self, user: Tensor, target_id: Tensor, *, history_id: Tensor, history_mask: Tensor,
                target_content: Tensor | None = None, history_content: Tensor | None = None) -> RankerOutput:
        parts = [user, target_id, masked_mean(history_id, history_mask)]
        if target_content is not None:
            parts += [target_content, masked_mean(history_content, history_mask)]
        return RankerOutput(self._logits(torch.cat(parts, dim=-1)), None)   # x0 (B, d0) -> (B,)

    def score_pairs(self, user: Tensor, target_id: Tensor, *, history_id: Tensor, history_mask: Tensor,
                    target_content: Tensor | None = None, history_content: Tensor | None = None) -> Tensor:
        """As DIN.score_pairs: logits (B, C); each row's pooled history is computed once, not per candidate."""
        n_b, n_c = user.shape[0], target_id.shape[0]
        if history_mask.dim() == 3:      # (B, C, L): each candidate pools its own cut of the history
            return self._pairs_cut(user, target_id, history_id=history_id, history_mask=history_mask,
                                   target_content=target_content, history_content=history_content)
        rows = [user, masked_mean(history_id, history_mask)]                # per row
        cands = [target_id]                                                 # per candidate
        if target_content is not None:
            rows.append(masked_mean(history_content, history_mask))
            cands.append(target_content)
        r = [x[:, None].expand(-1, n_c, -1) for x in rows]
        c = [x[None].expand(n_b, -1, -1) for x in cands]
        # x0 in forward's order: [user, target_id, hist_id, (target_content, hist_content)]
        order = [r[0], c[0], r[1]] + ([c[1], r[2]] if target_content is not None else [])
        return self._logits(torch.cat(order, dim=-1))                        # (B, C)

    def _pairs_cut(self, user: Tensor, target_id: Tensor, *, history_id: Tensor, history_mask: Tensor,
                   target_content: Tensor | None, history_content: Tensor | None) -> Tensor:
        """score_pairs with a per-candidate history mask (B, C, L): the pooled histories are (B, C, ·)."""
        n_b, n_c = user.shape[0], target_id.shape[0]
        m = history_mask.to(history_id.dtype)
        m = m / m.sum(-1, keepdim=True).clamp(min=1)                         # (B, C, L) masked-mean weights
        parts = [user[:, None].expand(-1, n_c, -1), target_id[None].expand(n_b, -1, -1),
                 torch.einsum("bcl,bld->bcd", m, history_id)]
        if target_content is not None:
            parts += [target_content[None].expand(n_b, -1, -1), torch.einsum("bcl,bld->bcd", m, history_content)]
        return self._logits(torch.cat(parts, dim=-1))                        # (B, C)


def build_ranker(cfg: RankerConfig, *, content_dim: int, user_fields: int = 0,
                 split_attention: bool = False, fused_unit: bool = False, packed_history: bool = False) -> nn.Module:
    """The configured ranker; content_dim 0 builds it for IDs alone. The user input is the user-ID embedding
    and `user_fields` user-feature embeddings, id_dim each. `split_attention`, `fused_unit`, `packed_history`:
    see TargetAttention."""
    user_dim = cfg.id_dim * (1 + user_fields)
    if cfg.kind == "din":
        return DIN(cfg, user_dim=user_dim, id_dim=cfg.id_dim, content_dim=content_dim, split=split_attention,
                   fused=fused_unit, packed=packed_history)
    return DCNv2(cfg, user_dim=user_dim, id_dim=cfg.id_dim, content_dim=content_dim)
