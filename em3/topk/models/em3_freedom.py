"""EM3 on the FREEDOM backbone: a Fusion-Q-Former content channel next to FREEDOM's ID channel.

The ID channel is FREEDOM unchanged (its auxiliary modality BPR terms included). The content
channel encodes every item with the Fusion-Q-Former, propagates the content embeddings over
the same (pruned) user-item graph with learnable user content embeddings and over the same
frozen item-item kNN graph; the score is the dot product of the concatenated [ID; content]
representations. CIC aligns each positive item's content embedding with its raw ID embedding
against K items sampled uniformly (the trainer draws them), as the authors' public code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from em3.topk.models.base import CICInputs, TopKOutput, propagate, xavier
from em3.topk.models.freedom import Freedom


class ItemContent(nn.Module):
    """All items' content embeddings from a fusion module over fixed item tokens.

    fusion({"image": (image (I, Ti, Ci), image_mask (I, Ti)), "text": (text (I, Tt, Ct), text_mask (I, Tt))})
    must return an object with `.embedding` (I, D) — the FusionQFormer contract.
    """

    def __init__(self, fusion: nn.Module, *, image: Tensor, image_mask: Tensor, text: Tensor, text_mask: Tensor):
        super().__init__()
        self.fusion = fusion
        # Tokens are inputs, not state: non-persistent buffers (they follow .to(device), stay out of checkpoints).
        self.register_buffer("image", image, persistent=False)
        self.register_buffer("image_mask", image_mask, persistent=False)
        self.register_buffer("text", text, persistent=False)
        self.register_buffer("text_mask", text_mask, persistent=False)

    def forward(self) -> Tensor:
        inputs = {"image": (self.image.float(), self.image_mask), "text": (self.text.float(), self.text_mask)}
        return self.fusion(inputs).embedding                           # (I, D)


class EM3Freedom(nn.Module):
    def __init__(self, *, backbone: Freedom, content: ItemContent, dim: int):
        super().__init__()
        self.backbone = backbone
        self.content = content
        self.user_content = xavier(backbone.num_users, dim)          # (U, D)
        self.cic_content_head = nn.Linear(dim, dim)                  # CIC projection heads (authors: Linear D->D)
        self.cic_id_head = nn.Linear(dim, dim)

    def channels(self, adj: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(U, 2D) users, (I, 2D) items as [ID; content], and the raw (I, D) content embeddings."""
        b = self.backbone
        # step 1: the ID channel, FREEDOM as is
        u_id, i_id = b.propagate(adj)                                 # (U, D), (I, D)
        # step 2: content embeddings of every item from the Fusion-Q-Former
        c = self.content()                                            # (I, D)
        # step 3: propagate content on the same graphs: user-item (with user content vectors) and item-item
        h = c
        for _ in range(b.n_mm_layers):
            h = torch.sparse.mm(b.mm_adj, h)                          # (I, D)
        out = propagate(adj, torch.cat([self.user_content, c]), b.n_layers)   # (U+I, D)
        u_c, i_c = out[: b.num_users], out[b.num_users:] + h
        # step 4: concatenate the channels; the score is their summed dot products
        return torch.cat([u_id, u_c], 1), torch.cat([i_id, i_c], 1), c

    def representations(self) -> tuple[Tensor, Tensor]:
        u, i, _ = self.channels(self.backbone.norm_adj)
        return u, i

    def forward(self, users: Tensor, pos: Tensor, neg: Tensor, *, cic_neg: Tensor | None = None) -> TopKOutput:
        b = self.backbone
        u, i, c = self.channels(b.masked_adj if self.training else b.norm_adj)
        out = TopKOutput(user=u[users], pos=i[pos], neg=i[neg])
        out.aux.update(b.modality_bpr(out.user[:, : b.user_id.shape[1]], pos, neg))   # ID part of the user, as FREEDOM
        if cic_neg is not None:
            # Project and normalise every item once, then gather: cheaper than projecting B*K rows.
            pc = F.normalize(self.cic_content_head(c), dim=-1)              # (I, D)
            pi = F.normalize(self.cic_id_head(b.item_id), dim=-1)           # (I, D)
            out.cic = CICInputs(content=pc[pos], ids=pi[pos],                 # (B, D)
                                neg_content=pc[cic_neg], neg_id=pi[cic_neg])  # (B, K, D)
        return out

    def pre_epoch(self, generator: torch.Generator) -> None:
        self.backbone.pre_epoch(generator)
