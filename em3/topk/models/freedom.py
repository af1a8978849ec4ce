"""FREEDOM (Zhou & Shen 2023, as MMRec implements it): LightGCN on a user-item graph pruned
degree-sensitively each epoch, plus ID embeddings propagated over a FROZEN item-item kNN graph
built once from the image and text features; modality projections enter only through
auxiliary BPR terms (weighted by reg_weight), never the score.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from em3.topk.graphs import bipartite_adjacency, item_item_graph, pruned_adjacency
from em3.topk.models.base import TopKOutput, bpr, propagate, xavier


class Freedom(nn.Module):
    def __init__(self, *, num_users: int, num_items: int, edges: Tensor, image: Tensor | None, text: Tensor | None,
                 dim: int, n_layers: int, n_mm_layers: int, knn_k: int, image_weight: float, edge_dropout: float):
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        self.n_layers, self.n_mm_layers, self.edge_dropout = n_layers, n_mm_layers, edge_dropout
        self.user_id = xavier(num_users, dim)                       # (U, D)
        self.item_id = xavier(num_items, dim)                       # (I, D)
        self.register_buffer("edges", edges, persistent=False)      # (2, E) training (user, item) edges
        self.register_buffer("norm_adj", bipartite_adjacency(edges, num_users=num_users, num_items=num_items),
                             persistent=False)                      # (U+I, U+I) full graph, for evaluation
        self.register_buffer("masked_adj", self.norm_adj, persistent=False)   # pruned graph, for training
        self.register_buffer("mm_adj", item_item_graph(image, text, k=knn_k, image_weight=image_weight),
                             persistent=False)                      # (I, I) frozen
        # MMRec keeps the raw features trainable (nn.Embedding.from_pretrained(freeze=False)).
        self.image = nn.Parameter(image.clone()) if image is not None else None   # (I, Ci)
        self.text = nn.Parameter(text.clone()) if text is not None else None      # (I, Ct)
        self.image_trs = nn.Linear(image.shape[1], dim) if image is not None else None
        self.text_trs = nn.Linear(text.shape[1], dim) if text is not None else None

    def propagate(self, adj: Tensor) -> tuple[Tensor, Tensor]:
        """ID channel: (U, D) users and (I, D) items = LightGCN(adj) + item-item propagation."""
        h = self.item_id
        for _ in range(self.n_mm_layers):
            h = torch.sparse.mm(self.mm_adj, h)                     # (I, D)
        out = propagate(adj, torch.cat([self.user_id, self.item_id]), self.n_layers)   # (U+I, D)
        return out[: self.num_users], out[self.num_users:] + h

    def representations(self) -> tuple[Tensor, Tensor]:
        return self.propagate(self.norm_adj)

    def modality_bpr(self, user: Tensor, pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
        """FREEDOM's auxiliary terms: BPR of the users against each projected modality."""
        aux = {}
        if self.image is not None:
            v = self.image_trs(self.image)                          # (I, D)
            aux["image_bpr"] = bpr(user, v[pos], v[neg])
        if self.text is not None:
            t = self.text_trs(self.text)                            # (I, D)
            aux["text_bpr"] = bpr(user, t[pos], t[neg])
        return aux

    def forward(self, users: Tensor, pos: Tensor, neg: Tensor, *, cic_neg: Tensor | None = None) -> TopKOutput:
        u, i = self.propagate(self.masked_adj if self.training else self.norm_adj)
        out = TopKOutput(user=u[users], pos=i[pos], neg=i[neg])
        out.aux.update(self.modality_bpr(out.user, pos, neg))
        return out

    def pre_epoch(self, generator: torch.Generator) -> None:
        """Draw this epoch's pruned user-item graph."""
        self.masked_adj = pruned_adjacency(self.edges.cpu(), num_users=self.num_users, num_items=self.num_items,
                                           rate=self.edge_dropout, generator=generator).to(self.edges.device)
