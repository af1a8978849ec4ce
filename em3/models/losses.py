"""Loss functions and embedding-quality measures, as pure functions of tensors.

Shape letters: B rows, K sampled negatives, D embedding size. CIC inputs are expected to be
projected and L2-normalised already (the model's heads do it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy of the click logits (B,) against 0/1 labels (B,)."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def _info_nce(anchor: Tensor, positive: Tensor, *, temperature: float) -> Tensor:
    """In-batch InfoNCE: row b's positive is positive[b]; the other rows are its negatives."""
    logits = anchor.float() @ positive.float().T / temperature              # (B, B)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def _sampled_nce(anchor: Tensor, positive: Tensor, negatives: Tensor, *, temperature: float) -> Tensor:
    """Sampled InfoNCE: positive at index 0, K negatives after it (the authors' public form)."""
    pos = (anchor.float() * positive.float()).sum(-1, keepdim=True)          # (B, 1)
    neg = torch.einsum("bd,bkd->bk", anchor.float(), negatives.float())     # (B, K)
    logits = torch.cat([pos, neg], dim=1) / temperature                     # (B, 1+K)
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


def cic_loss(content: Tensor, ids: Tensor, *, temperature: float,
             neg_content: Tensor | None = None, neg_id: Tensor | None = None) -> Tensor:
    """Content-ID contrastive loss: symmetric InfoNCE between each item's content and ID embedding.

    content, ids (B, D): row b of each is the same item (the model passes the batch's unique targets).
    Without negatives: in-batch (the other rows are negatives). With neg_content, neg_id (B, K, D):
    content->ID against neg_id and ID->content against neg_content, the two directions averaged.
    """
    if (neg_content is None) != (neg_id is None):
        raise ValueError("cic_loss: pass both neg_content and neg_id, or neither")
    if neg_content is None:
        return 0.5 * (_info_nce(content, ids, temperature=temperature)
                      + _info_nce(ids, content, temperature=temperature))
    return 0.5 * (_sampled_nce(content, ids, neg_id, temperature=temperature)
                  + _sampled_nce(ids, content, neg_content, temperature=temperature))


def alignment(x: Tensor, y: Tensor, *, alpha: float = 2.0) -> Tensor:
    """Wang & Isola alignment: mean ||x_i - y_i||^alpha of L2-normalised pairs (lower = better aligned)."""
    x, y = F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1)
    return (x - y).norm(dim=1).pow(alpha).mean()


def uniformity(x: Tensor, *, t: float = 2.0) -> Tensor:
    """Wang & Isola uniformity: log mean exp(-t ||x_i - x_j||^2) over pairs (lower = more uniform)."""
    x = F.normalize(x.float(), dim=-1)
    return torch.pdist(x).pow(2).mul(-t).exp().mean().log()
