"""The Fusion-Q-Former: learnable queries that fuse an item's modality tokens into one D-dim vector.

Whatever modalities the config lists (em3/modalities/), in registry order, each with its own projection
to D; an item lacking one has that modality's tokens masked. Shape letters: N items, T_m tokens of
modality m, T = tokens of all fused modalities,
Nq queries, D hidden size, h heads, C* encoder widths.

Linear layers are named `q_proj`, `k_proj`, `v_proj`, `out_proj`, `fc1`, `fc2`, `token_proj`:
peft LoRA picks its targets by these names (see em3/models/history.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from em3.config import ConfigError, FusionConfig
from em3.modalities import ordered
from em3.models.attention_fold import folded_attention, pays, query_rows, query_vectors, shared_query_rows
from em3.models.content import apply_top
from em3.models.fold import foldable, folded_embedding

if TYPE_CHECKING:
    from em3.modalities.base import TokenTop

# cuDNN attention builds a new plan for every new batch shape (~25-45 ms a call on an H200), and
# deduplication makes the item count vary every step: use the memory-efficient kernel instead.
SDPA_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


Inputs = Mapping[str, tuple[Tensor, Tensor]]   # modality -> (tokens (N, T_m, C_m), mask (N, T_m))


@dataclass
class FusionOutput:
    embedding: Tensor                   # (N, D)
    attention: list[Tensor] | None      # per layer (N, h, Nq, T): the queries over the fused tokens
    segments: tuple[tuple[str, int], ...] = ()   # (modality, T_m) of the attention columns, in order


class Attention(nn.Module):
    """Multi-head attention with separately named q/k/v/out projections (so LoRA can target each).

    With `fold` (speed.fold_attention), a few queries over many keys take the folded order
    (em3/models/attention_fold.py): the same function without projecting every key row to K and V.
    """

    def __init__(self, dim: int, *, num_heads: int, fold: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.fold = fold
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, key: Tensor, key_mask: Tensor, *,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """query (N, Q, D), key (N, K, D), key_mask (N, K) True = real; every row needs >= 1 real key."""
        n, q_len, dim = query.shape
        if self.fold and pays(self, q_len):
            out, weights = folded_attention(self, query, key, key_mask, need_weights=need_weights)
            return self.out_proj(out), weights
        h, hd = self.num_heads, dim // self.num_heads
        q = self.q_proj(query).view(n, q_len, h, hd).transpose(1, 2)       # (N, h, Q, hd)
        k = self.k_proj(key).view(n, -1, h, hd).transpose(1, 2)            # (N, h, K, hd)
        v = self.v_proj(key).view(n, -1, h, hd).transpose(1, 2)            # (N, h, K, hd)
        allowed = key_mask[:, None, None, :]                               # (N, 1, 1, K)
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)             # (N, h, Q, K)
            weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
            out = weights @ v                                              # (N, h, Q, hd)
        else:
            with sdpa_kernel(SDPA_BACKENDS):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        out = out.transpose(1, 2).reshape(n, q_len, dim)                   # (N, Q, D)
        return self.out_proj(out), weights


class SelfAttnLayer(nn.Module):
    """The authors' layer: self-attention over [queries; tokens], residual, dropout, post-LayerNorm, no FFN."""

    def __init__(self, dim: int, *, num_heads: int, dropout: float, fold: bool = False):
        super().__init__()
        self.attn = Attention(dim, num_heads=num_heads, fold=fold)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, *, need_weights: bool,
                rows: int | None = None) -> tuple[Tensor, Tensor | None]:
        """x (N, S, D), mask (N, S); `rows` computes only the first `rows` output rows (the queries).

        Every output row depends on the others only as keys, so computing the first rows alone is exact.
        """
        query = x if rows is None else x[:, :rows]                        # (N, S or Nq, D)
        out, w = self.attn(query, x, mask, need_weights=need_weights)     # (N, S or Nq, D)
        return self.norm(query + self.dropout(out)), w


class Blip2Layer(nn.Module):
    """BLIP-2 Q-Former layer: self-attention among queries, cross-attention to the tokens, feed-forward."""

    def __init__(self, dim: int, *, num_heads: int, dropout: float, fold: bool = False):
        super().__init__()
        self.self_attn = Attention(dim, num_heads=num_heads, fold=fold)
        self.cross_attn = Attention(dim, num_heads=num_heads, fold=fold)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: Tensor, tokens: Tensor, mask: Tensor, *,
                need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """q (N, Nq, D), tokens (N, T, D), mask (N, T)."""
        all_real = torch.ones(q.shape[:2], dtype=torch.bool, device=q.device)
        out, _ = self.self_attn(q, q, all_real)
        q = self.norm1(q + self.dropout(out))
        # An item with no real token cross-attends to nothing: unmask one key to keep the softmax finite,
        # then zero that item's cross-attention output and weights.
        has_any = mask.any(dim=1)                                          # (N,)
        safe = mask.clone()
        safe[:, 0] |= ~has_any
        out, w = self.cross_attn(q, tokens, safe, need_weights=need_weights)
        keep = has_any[:, None, None].to(out.dtype)
        q = self.norm2(q + self.dropout(out * keep))                       # (N, Nq, D)
        q = self.norm3(q + self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(q))))))
        return q, (w * keep[:, None] if w is not None else None)


class ModalityProjection(nn.Module):
    """Per-modality LayerNorm (raw encoder scales differ ~10x) then the projection to D.

    With `prenorm` the token store already holds LayerNormed tokens (no affine): the projection's
    weights absorb the affine (W diag(g), W b + c span the same maps), so only the Linear remains.
    With `compute_dtype` bf16 the projection runs in bf16 (the store's dtype) and returns float32.
    With `top` (a backbone's last per-token layer, em3.modalities.base.TokenTop) the tokens first go
    through that layer, trainable from its pretrained weights (`top_weight`, `top_bias`), then the LayerNorm.
    """

    def __init__(self, in_dim: int, dim: int, *, prenorm: bool = False, compute_dtype: torch.dtype = torch.float32,
                 top: "TokenTop | None" = None):
        super().__init__()
        self.top_activation = top.activation if top is not None else None
        if top is not None:
            if top.weight.shape[1] != in_dim:
                raise ConfigError(f"encoder.image_top: the cached top layer takes {top.weight.shape[1]}-d tokens, "
                                  f"the store holds {in_dim}-d ones (a stale feature cache)")
            # Plain parameters, not an nn.Linear: no LoRA target by name, and no draw from the RNG, so
            # every other parameter is initialised as without the top.
            self.top_weight = nn.Parameter(torch.from_numpy(np.array(top.weight, dtype=np.float32)))   # (C, C_in)
            self.top_bias = nn.Parameter(torch.from_numpy(np.array(top.bias, dtype=np.float32)))       # (C,)
            in_dim = top.out_dim
        self.norm = nn.Identity() if prenorm and top is None else nn.LayerNorm(in_dim)
        self.token_proj = nn.Linear(in_dim, dim)
        self.compute_dtype = compute_dtype

    def _top(self, x: Tensor) -> Tensor:
        if self.top_activation is None:
            return x
        w, b = self.top_weight.to(x.dtype), self.top_bias.to(x.dtype)
        return apply_top(x, w, b, self.top_activation)                     # (N, T, C_in) -> (N, T, C)

    def forward(self, x: Tensor) -> Tensor:
        if self.compute_dtype == torch.float32:
            return self.token_proj(self.norm(self._top(x.float())))        # (N, T, C) -> (N, T, D)
        # bf16 end to end on the big matmul: the store is bf16 already, the weights are cast per call.
        w, b = self.token_proj.weight.to(self.compute_dtype), self.token_proj.bias.to(self.compute_dtype)
        return F.linear(self.norm(self._top(x.to(self.compute_dtype))), w, b).float()


class FusionQFormer(nn.Module):
    """Fuses an item's modality tokens into one fixed-size D-dim content embedding.

    Two stages, callable apart: `project` (encoder tokens -> D-dim tokens, per modality) and the
    fusion of projected tokens; `forward` runs both, or only the fusion when `projected=True`.
    """

    def __init__(self, cfg: FusionConfig, *, dims: Mapping[str, int], prenorm: bool = False,
                 compute_dtype: torch.dtype = torch.float32, queries_only_last_layer: bool = False,
                 tops: "Mapping[str, TokenTop] | None" = None, fold_token_proj: bool = False,
                 fold_attention: bool = False):
        super().__init__()
        self.mode = cfg.mode
        self.modalities = ordered(cfg.modalities)                               # fixed order: the registry's
        lacking = [m for m in self.modalities if m not in dims]
        if lacking:
            raise ConfigError(f"model.fusion.modalities: no tokens of {lacking} to fuse (the token store holds "
                              f"{sorted(dims)})")
        self.queries_only_last_layer = queries_only_last_layer
        tops = tops or {}
        self.proj = nn.ModuleDict({m: ModalityProjection(dims[m], cfg.dim, prenorm=prenorm, compute_dtype=compute_dtype,
                                                         top=tops.get(m)) for m in self.modalities})
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.mode == "mean":
            self.queries = None
            self.layers = nn.ModuleList()
            self.out_proj = nn.Linear(len(self.modalities) * cfg.dim, cfg.dim)
        else:
            self.queries = nn.Parameter(torch.empty(cfg.num_queries, cfg.dim))
            nn.init.xavier_uniform_(self.queries)
            layer = SelfAttnLayer if cfg.mode == "selfattn" else Blip2Layer
            self.layers = nn.ModuleList(layer(cfg.dim, num_heads=cfg.num_heads, dropout=cfg.dropout,
                                              fold=fold_attention) for _ in range(cfg.num_layers))
            self.out_proj = nn.Linear(cfg.num_queries * cfg.dim, cfg.dim)
        # speed.fold_token_proj where it computes the same function (em3/models/fold.py); else the plain path
        self.fold = fold_token_proj and foldable(self)

    def _shared_queries_fold(self) -> bool:
        """Whether the selfattn layers are one queries-only layer whose attention folds (speed.fold_attention):
        its queries are then the same parameters for every item (em3/models/attention_fold.py)."""
        if self.mode != "selfattn" or len(self.layers) != 1 or not self.queries_only_last_layer:
            return False
        attn = self.layers[0].attn
        return attn.fold and pays(attn, self.queries.shape[0])

    def query_vectors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Where `_shared_queries_fold` holds: the queries (Nq, D), their score vectors (h·Nq, D), offsets
        (h·Nq,) and own scores (h·Nq, Nq), in the current parameters (em3/models/shared_reads.py)."""
        return (self.queries, *query_vectors(self.layers[0], self.queries))

    def embed_pooled(self, pooled: Tensor) -> Tensor:
        """Where `_shared_queries_fold` holds: the attention-weighted keys (N, h·Nq, D) -> embeddings (N, D),
        as `forward` finishes them (the layer's value map, dropout and norm, then out_proj)."""
        return self.out_proj(query_rows(self.layers[0], self.queries, pooled).reshape(pooled.shape[0], -1))

    def project(self, inputs: Inputs) -> tuple[list[Tensor], list[Tensor]]:
        """{modality: (tokens (N, T_m, C_m), mask (N, T_m))} -> per fused modality the tokens projected to D
        (N, T_m, D) and their masks (N, T_m) bool; modalities not fused are ignored."""
        tokens = [self.proj[m](inputs[m][0]) for m in self.modalities]     # each (N, T_m, D)
        masks = [inputs[m][1].bool() for m in self.modalities]             # each (N, T_m)
        return tokens, masks

    def forward(self, inputs: Inputs | tuple[list[Tensor], list[Tensor]], *, projected: bool = False,
                return_attention: bool = False) -> FusionOutput:
        """{modality: (tokens, mask)} -> FusionOutput; with `projected`, `inputs` is `project`'s (tokens, masks)
        and only the fusion runs (so a caller can share one projection between paths)."""
        if self.fold and not projected and not return_attention:
            segments = tuple((m, int(inputs[m][1].shape[1])) for m in self.modalities)
            return FusionOutput(folded_embedding(self, inputs), None, segments)
        tokens, masks = inputs if projected else self.project(inputs)
        segments = tuple((m, int(k.shape[1])) for m, k in zip(self.modalities, masks))
        n = masks[0].shape[0]
        if self.mode == "mean":
            # Masked mean per modality (a missing modality pools to zeros), then concat and project.
            pooled = [(x * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1) for x, m in zip(tokens, masks)]
            emb = self.out_proj(self.dropout(torch.cat(pooled, dim=-1)))  # (N, D)
            return FusionOutput(emb, [] if return_attention else None, segments)

        nq = self.queries.shape[0]
        attention: list[Tensor] = []
        if self._shared_queries_fold():
            # One queries-only layer over the shared queries, folded: no [queries; tokens] is built.
            q, w = shared_query_rows(self.layers[0], self.queries, tokens, masks, need_weights=return_attention)
            if w is not None:
                attention.append(w[:, :, :, nq:])                          # (N, h, Nq, T)
            return FusionOutput(self.out_proj(q.reshape(n, -1)), attention if return_attention else None, segments)

        x_tok = torch.cat(tokens, dim=1)                                   # (N, T, D)
        mask = torch.cat(masks, dim=1)                                     # (N, T)
        queries = self.queries.unsqueeze(0).expand(n, -1, -1)              # (N, Nq, D)
        if self.mode == "selfattn":
            # Queries are prepended and always real keys, so no row of the softmax is empty.
            x = torch.cat([queries, x_tok], dim=1)                         # (N, Nq+T, D)
            full_mask = torch.cat([torch.ones(n, nq, dtype=torch.bool, device=x.device), mask], dim=1)
            last = len(self.layers) - 1
            for i, layer in enumerate(self.layers):
                rows = nq if self.queries_only_last_layer and i == last else None
                x, w = layer(x, full_mask, need_weights=return_attention, rows=rows)
                if w is not None:
                    attention.append(w[:, :, :nq, nq:])                    # (N, h, Nq, T)
            q = x[:, :nq]                                                  # (N, Nq, D)
        else:
            q = queries
            for layer in self.layers:
                q, w = layer(q, x_tok, mask, need_weights=return_attention)
                if w is not None:
                    attention.append(w)                                    # (N, h, Nq, T)
        emb = self.out_proj(q.reshape(n, -1))                              # (N, Nq*D) -> (N, D)
        return FusionOutput(emb, attention if return_attention else None, segments)
