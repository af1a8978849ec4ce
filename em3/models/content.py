"""Where item content comes from: the cached encoder tokens as buffers, or frozen pooled features.

Shape letters: I items (rows I+1, row 0 = padding), N gathered items, Ti/Tt tokens, Ci/Ct widths, D.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from em3.modalities import ordered
from em3.errors import CacheError

if TYPE_CHECKING:
    from em3.data.cache import ItemTokens


def check_tokens(tokens: "ItemTokens", *, num_items: int) -> None:
    """Fail loudly when the token cache does not match the sample set (rows = I+1)."""
    for name, m in tokens.modalities.items():
        for part, arr in (("tokens", m.tokens), ("mask", m.mask)):
            if arr.shape[0] != num_items + 1:
                raise CacheError(f"ItemTokens[{name!r}].{part}: has {arr.shape[0]} rows, expected num_items+1 = "
                                 f"{num_items + 1} (row 0 = padding); the feature cache is from another dataset")
        if m.tokens.ndim != 3:
            raise CacheError(f"ItemTokens[{name!r}].tokens: expected an (I+1, T, C) array, got {m.tokens.shape}")


class ItemTokenStore(nn.Module):
    """Every item's encoder tokens of each fused modality as non-persistent buffers (not in checkpoints).

    Default: float16 as cached, cast on use. With `prenorm`, each token is LayerNormed once here (no
    affine) and stored in `dtype` (the projection's compute dtype), so a step gathers ready inputs.
    With `pca` = k > 0 (needs `prenorm`), a modality wider than k keeps the top-k principal components
    of its real tokens (`pca_reduce`). A modality whose tokens still go through a trainable top layer
    (`ModalityTokens.top`, encoder.image_top = trained) is kept as cached: it is normalised after that layer.
    """

    def __init__(self, tokens: "ItemTokens", *, prenorm: bool = False, dtype: torch.dtype = torch.float16,
                 modalities: Sequence[str] | None = None, pca: int = 0, pool_mean: Sequence[str] = ()):
        super().__init__()
        if pca and not prenorm:
            raise ValueError("ItemTokenStore: pca needs prenorm (the components are fitted to prenormed tokens)")
        self.prenorm = prenorm
        self.names = tuple(m for m in tokens.names if modalities is None or m in modalities)
        self.tops = {m: tokens[m].top for m in self.names if tokens[m].top is not None}
        for m in self.names:   # buffers follow .to(device)
            ready = prenorm and m not in self.tops
            x = _stored(tokens[m].tokens, prenorm=ready, dtype=dtype if ready else torch.float16)
            mask = torch.from_numpy(np.array(tokens[m].mask, dtype=bool))              # (I+1, T)
            if pca and ready and x.shape[-1] > pca:
                x = pca_reduce(x, mask, k=pca)
            if m in pool_mean:
                if not ready:
                    raise ValueError(f"ItemTokenStore: pool_mean of {m!r} needs prenormed tokens without a top layer")
                x, mask = mean_tokens(x, mask)                                           # (I+1, 1, C), (I+1, 1)
            self.register_buffer(f"{m}_tokens", x, persistent=False)
            self.register_buffer(f"{m}_mask", mask, persistent=False)

    @property
    def dims(self) -> dict[str, int]:
        """C of each modality, as stored (a modality with a top layer: that layer's input width)."""
        return {m: int(getattr(self, f"{m}_tokens").shape[-1]) for m in self.names}

    def forward(self, items: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """items (N,) -> {modality: (tokens (N, T_m, C_m) in the store's dtype, mask (N, T_m))}; the projection
        casts. index_select: ~2x faster than [] for big rows."""
        return {m: (getattr(self, f"{m}_tokens").index_select(0, items), getattr(self, f"{m}_mask")[items])
                for m in self.names}


def mean_tokens(x: Tensor, mask: Tensor, *, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """(I+1, T, C) tokens and (I+1, T) mask -> each item's masked mean (I+1, 1, C), in x's dtype (summed in
    float32), and (I+1, 1) whether it has any real token; an item without one keeps a zero token, masked, so a
    masked mean of the one token gives 0 as the mean of none did."""
    out = torch.zeros((x.shape[0], 1, x.shape[-1]), dtype=x.dtype)
    for start in range(0, x.shape[0], chunk):
        m = mask[start:start + chunk]                                                    # (n, T)
        part = x[start:start + chunk].float() * m[..., None]                              # (n, T, C)
        out[start:start + chunk, 0] = (part.sum(1) / m.sum(1, keepdim=True).clamp(min=1)).to(x.dtype)
    return out, mask.any(dim=1, keepdim=True)


def _stored(x: np.ndarray, *, prenorm: bool, dtype: torch.dtype, chunk: int = 256) -> Tensor:
    """(I+1, T, C) cached tokens as a tensor of `dtype`; LayerNormed per token (no affine) with `prenorm`.

    Chunked, so a memory-mapped cache is never fully materialised as float32. An all-zero (masked)
    token stays zero.
    """
    if not prenorm:
        return torch.from_numpy(np.array(x, dtype=np.float16)).to(dtype)
    out = torch.empty(x.shape, dtype=dtype)
    for start in range(0, x.shape[0], chunk):
        part = torch.from_numpy(np.asarray(x[start:start + chunk], dtype=np.float32))     # (n, T, C)
        out[start:start + chunk] = F.layer_norm(part, part.shape[-1:]).to(dtype)
    return out


def pca_reduce(x: Tensor, mask: Tensor, *, k: int, chunk: int = 256) -> Tensor:
    """(I+1, T, C) tokens -> (I+1, T, k): each real token's coordinates on the top-k principal axes of the
    real tokens (centred on their mean; padding and masked tokens stay 0). Fitted in float64, deterministic
    (eigh of the C x C covariance), stored in x's dtype."""
    n_c = x.shape[-1]
    total, n = torch.zeros(n_c, dtype=torch.float64), 0
    gram = torch.zeros(n_c, n_c, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        rows = x[start:start + chunk][mask[start:start + chunk]].double()             # (r, C) real tokens
        total += rows.sum(0)
        gram += rows.T @ rows
        n += rows.shape[0]
    mean = total / max(n, 1)
    cov = gram / max(n, 1) - torch.outer(mean, mean)                                  # (C, C)
    _, vecs = torch.linalg.eigh(cov)                                                  # ascending eigenvalues
    axes = vecs[:, -k:].flip(-1)                                                      # (C, k), largest first
    axes = axes * torch.where(axes.sum(0) < 0, -1.0, 1.0).to(axes.dtype)              # a fixed sign per axis
    out = torch.zeros(*x.shape[:-1], k, dtype=x.dtype)
    for start in range(0, x.shape[0], chunk):
        part = (x[start:start + chunk].double() - mean) @ axes                        # (n, T, k)
        out[start:start + chunk] = (part * mask[start:start + chunk, :, None]).to(x.dtype)
    return out


ACTIVATIONS = {"none": lambda x: x, "relu": F.relu, "relu6": F.relu6}


def apply_top(x: Tensor, weight: Tensor, bias: Tensor, activation: str) -> Tensor:
    """(..., C_in) tokens through a per-token top layer act(x W^T + b) -> (..., C_out)."""
    return ACTIVATIONS[activation](F.linear(x, weight, bias))


def pooled_features(tokens: "ItemTokens", *, modalities: Sequence[str], chunk: int = 512) -> Tensor:
    """(I+1, sum C) masked mean-pooled encoder tokens, L2-normalised per modality, concatenated.

    A missing modality (all tokens masked) pools to zeros. Computed in chunks so a memory-mapped
    cache is never fully materialised as float32. A modality cached below its top layer goes through
    that layer's pretrained weights first (frozen: the same features as a frozen-top cache).
    """
    parts = []
    for m in ordered(modalities):
        x_all, mask_all, top = tokens[m].tokens, tokens[m].mask, tokens[m].top
        rows = []
        for start in range(0, x_all.shape[0], chunk):
            x = torch.from_numpy(np.asarray(x_all[start:start + chunk], dtype=np.float32))   # (n, T, C)
            mask = torch.from_numpy(np.asarray(mask_all[start:start + chunk], dtype=bool))    # (n, T)
            if top is not None:
                x = apply_top(x, torch.from_numpy(top.weight), torch.from_numpy(top.bias), top.activation)
            pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)    # (n, C)
            rows.append(F.normalize(pooled, dim=-1))   # L2 per modality: raw scales differ ~10x
        parts.append(torch.cat(rows))
    return torch.cat(parts, dim=-1)


class PrecomputedContent(nn.Module):
    """The pre-extracted-features baseline: frozen pooled encoder features and one trainable projection to D."""

    def __init__(self, tokens: "ItemTokens", *, modalities: Sequence[str], dim: int):
        super().__init__()
        self.register_buffer("features", pooled_features(tokens, modalities=modalities), persistent=False)
        self.token_proj = nn.Linear(self.features.shape[-1], dim)

    def forward(self, items: Tensor) -> Tensor:
        return self.token_proj(self.features[items])                       # (N,) -> (N, D)
