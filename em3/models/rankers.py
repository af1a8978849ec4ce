"""Ranking models that score (user, target, history) from ID and content embeddings: DIN and DCN-v2.

Independent of the content module: content inputs are None for the ID-only arm.
Shape letters: B rows, L history length, Du user / Di item-ID / Dc content sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from em3.config import RankerConfig


@dataclass
class RankerOutput:
    logits: Tensor                 # (B,)
    attention: Tensor | None       # (B, L) DIN's weights over the history (0 on padding), None for DCN-v2


def mlp(in_dim: int, hidden: Sequence[int], *, dropout: float) -> tuple[nn.Sequential, int]:
    """Linear-ReLU-Dropout stack; returns it and its output size."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = h
    return nn.Sequential(*layers), in_dim


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """x (B, L, D), mask (B, L) -> (B, D); an empty history pools to zeros."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class TargetAttention(nn.Module):
    """DIN's activation unit: an MLP over [q, k, q-k, q*k] scores each history item against the target."""

    def __init__(self, dim: int, *, hidden: Sequence[int], dropout: float):
        super().__init__()
        body, out = mlp(4 * dim, hidden, dropout=dropout)
        self.score = nn.Sequential(body, nn.Linear(out, 1))

    def forward(self, target: Tensor, history: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """target (B, D), history (B, L, D), mask (B, L) -> interest (B, D), weights (B, L)."""
        q = target.unsqueeze(1).expand_as(history)                          # (B, L, D)
        s = self.score(torch.cat([q, history, q - history, q * history], dim=-1)).squeeze(-1)  # (B, L)
        # Departure from DIN: softmax-normalised weights (DIN sums unnormalised scores), which keeps the
        # interest on one scale whatever the history length; padding gets exactly 0, an empty history 0s.
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
        w = s.softmax(dim=-1) * mask.to(s.dtype)                             # (B, L)
        return (w.unsqueeze(-1) * history).sum(1), w


class DIN(nn.Module):
    """Deep Interest Network: target attention over the ID history and over the content history, then an MLP."""

    def __init__(self, cfg: RankerConfig, *, user_dim: int, id_dim: int, content_dim: int):
        super().__init__()
        self.id_attention = TargetAttention(id_dim, hidden=cfg.attention_hidden, dropout=cfg.dropout)
        self.content_attention = (TargetAttention(content_dim, hidden=cfg.attention_hidden, dropout=cfg.dropout)
                                  if content_dim else None)
        body, out = mlp(user_dim + 2 * id_dim + 2 * content_dim, cfg.mlp_hidden, dropout=cfg.dropout)
        self.head = nn.Sequential(body, nn.Linear(out, 1))

    def forward(self, user: Tensor, target_id: Tensor, *, history_id: Tensor, history_mask: Tensor,
                target_content: Tensor | None = None, history_content: Tensor | None = None) -> RankerOutput:
        id_interest, w = self.id_attention(target_id, history_id, history_mask)     # (B, Di), (B, L)
        parts = [user, target_id, id_interest]
        if self.content_attention is not None:
            content_interest, wc = self.content_attention(target_content, history_content, history_mask)
            parts += [target_content, content_interest]
            w = 0.5 * (w + wc)   # the dashboard's weights: mean of the ID and content attention
        return RankerOutput(self.head(torch.cat(parts, dim=-1)).squeeze(-1), w)


class DCNv2(nn.Module):
    """DCN-v2 (parallel form): full-rank cross network and a deep MLP over [user, target, pooled histories]."""

    def __init__(self, cfg: RankerConfig, *, user_dim: int, id_dim: int, content_dim: int):
        super().__init__()
        d0 = user_dim + 2 * id_dim + 2 * content_dim
        self.cross = nn.ModuleList(nn.Linear(d0, d0) for _ in range(cfg.cross_layers))
        self.deep, deep_out = mlp(d0, cfg.mlp_hidden, dropout=cfg.dropout)
        self.head = nn.Linear(d0 + deep_out, 1)

    def forward(self, user: Tensor, target_id: Tensor, *, history_id: Tensor, history_mask: Tensor,
                target_content: Tensor | None = None, history_content: Tensor | None = None) -> RankerOutput:
        parts = [user, target_id, masked_mean(history_id, history_mask)]
        if target_content is not None:
            parts += [target_content, masked_mean(history_content, history_mask)]
        x0 = torch.cat(parts, dim=-1)                                       # (B, d0)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x                                           # x_{l+1} = x0 ⊙ (W x_l + b) + x_l
        out = self.head(torch.cat([x, self.deep(x0)], dim=-1)).squeeze(-1)  # (B,)
        return RankerOutput(out, None)


def build_ranker(cfg: RankerConfig, *, content_dim: int) -> nn.Module:
    """The configured ranker; content_dim 0 builds it for IDs alone."""
    cls = DIN if cfg.kind == "din" else DCNv2
    return cls(cfg, user_dim=cfg.id_dim, id_dim=cfg.id_dim, content_dim=content_dim)
