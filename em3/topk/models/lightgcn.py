"""LightGCN: user and item ID embeddings smoothed over the normalised user-item graph (He et al. 2020)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from em3.topk.graphs import bipartite_adjacency
from em3.topk.models.base import TopKOutput, emb_l2, propagate, xavier


class LightGCN(nn.Module):
    def __init__(self, *, num_users: int, num_items: int, edges: Tensor, dim: int, n_layers: int):
        super().__init__()
        self.num_users, self.num_items, self.n_layers = num_users, num_items, n_layers
        self.embedding = xavier(num_users + num_items, dim)       # (U+I, D) ego embeddings
        self.register_buffer("adj", bipartite_adjacency(edges, num_users=num_users, num_items=num_items), persistent=False)

    def representations(self) -> tuple[Tensor, Tensor]:
        out = propagate(self.adj, self.embedding, self.n_layers)  # (U+I, D)
        return out[: self.num_users], out[self.num_users:]

    def forward(self, users: Tensor, pos: Tensor, neg: Tensor, *, cic_neg: Tensor | None = None) -> TopKOutput:
        u, i = self.representations()
        out = TopKOutput(user=u[users], pos=i[pos], neg=i[neg])
        ego_u, ego_i = self.embedding[: self.num_users], self.embedding[self.num_users:]
        out.aux["l2"] = emb_l2(ego_u[users], ego_i[pos], ego_i[neg])   # LightGCN regularises the ego layer
        return out

    def pre_epoch(self, generator: torch.Generator) -> None:
        """Nothing to resample per epoch."""
