"""What every top-K model returns for a BPR batch, and the small pieces the models share.

Shape letters: B batch of (user, positive, negative) triples, D embedding size, K CIC negatives.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class CICInputs:
    """Projected, L2-normalised content and ID embeddings of the batch's positive items."""

    content: Tensor        # (B, D)
    ids: Tensor            # (B, D)
    neg_content: Tensor    # (B, K, D)
    neg_id: Tensor         # (B, K, D)


@dataclass
class TopKOutput:
    """A model's view of one BPR batch; the trainer turns it into the loss."""

    user: Tensor                                              # (B, D') final user representations
    pos: Tensor                                               # (B, D') positive items
    neg: Tensor                                               # (B, D') sampled negatives
    aux: dict[str, Tensor] = field(default_factory=dict)      # unweighted auxiliary losses (x reg_weight)
    cic: CICInputs | None = None                              # EM3 only (x cic_weight)


def xavier(*shape: int) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(*shape)))


def bpr(user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """Mean -log sigmoid(<u, p> - <u, n>) over the batch: user, pos, neg (B, D) -> scalar."""
    return -F.logsigmoid((user * pos).sum(-1) - (user * neg).sum(-1)).mean()


def emb_l2(*embeddings: Tensor) -> Tensor:
    """MMRec's EmbLoss: sum of the embeddings' Frobenius norms over the batch size."""
    return sum(e.norm(p=2) for e in embeddings) / embeddings[-1].shape[0]


def unit_features(x: Tensor | None) -> Tensor | None:
    """Rows scaled to unit L2 norm (zero rows stay zero). Departure from MMRec, which feeds raw
    features: frozen encoder outputs differ ~10x in scale across modalities (EM3_NOTES)."""
    return None if x is None else x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def propagate(adj: Tensor, ego: Tensor, n_layers: int) -> Tensor:
    """LightGCN propagation: mean of [E, A E, A^2 E, ...] up to n_layers. adj (N, N), ego (N, D)."""
    layers = [ego]
    for _ in range(n_layers):
        layers.append(torch.sparse.mm(adj, layers[-1]))
    return torch.stack(layers, 1).mean(1)                      # (N, D)
