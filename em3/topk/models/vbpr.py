"""VBPR: matrix factorisation whose item vector is [ID embedding; linear projection of the
frozen item features] (He & McAuley 2016, as MMRec implements it)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from em3.topk.models.base import TopKOutput, emb_l2, xavier


class VBPR(nn.Module):
    def __init__(self, *, num_users: int, num_items: int, features: Tensor, dim: int):
        super().__init__()
        self.user = xavier(num_users, 2 * dim)                     # (U, 2D): half meets IDs, half meets content
        self.item = xavier(num_items, dim)                         # (I, D)
        self.register_buffer("features", features, persistent=False)   # (I, C) frozen
        self.item_linear = nn.Linear(features.shape[1], dim)
        nn.init.xavier_normal_(self.item_linear.weight)

    def representations(self) -> tuple[Tensor, Tensor]:
        items = torch.cat([self.item, self.item_linear(self.features)], dim=1)   # (I, 2D)
        return self.user, items

    def forward(self, users: Tensor, pos: Tensor, neg: Tensor, *, cic_neg: Tensor | None = None) -> TopKOutput:
        u, i = self.representations()
        out = TopKOutput(user=u[users], pos=i[pos], neg=i[neg])
        out.aux["l2"] = emb_l2(out.user, out.pos, out.neg)
        return out

    def pre_epoch(self, generator: torch.Generator) -> None:
        """Nothing to resample per epoch."""
