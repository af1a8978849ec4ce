"""Where item content comes from: the cached encoder tokens as buffers, or frozen pooled features.

Shape letters: I items (rows I+1, row 0 = padding), N gathered items, Ti/Tt tokens, Ci/Ct widths, D.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from em3.config import MODALITIES
from em3.errors import CacheError

if TYPE_CHECKING:
    from em3.data.cache import ItemTokens


def check_tokens(tokens: "ItemTokens", *, num_items: int) -> None:
    """Fail loudly when the token cache does not match the sample set (rows = I+1)."""
    for name in ("image", "image_mask", "text", "text_mask"):
        rows = getattr(tokens, name).shape[0]
        if rows != num_items + 1:
            raise CacheError(f"ItemTokens.{name}: has {rows} rows, expected num_items+1 = {num_items + 1} "
                             "(row 0 = padding); the feature cache is from another dataset")
    if tokens.image.ndim != 3 or tokens.text.ndim != 3:
        raise CacheError(f"ItemTokens.image/text: expected (I+1, T, C) arrays, got {tokens.image.shape} "
                         f"and {tokens.text.shape}")


class ItemTokenStore(nn.Module):
    """Every item's encoder tokens as non-persistent buffers (not in checkpoints), gathered by index.

    Default: float16 as cached, cast on use. With `prenorm`, each token is LayerNormed once here (no
    affine) and stored in `dtype` (the projection's compute dtype), so a step gathers ready inputs.
    """

    def __init__(self, tokens: "ItemTokens", *, prenorm: bool = False, dtype: torch.dtype = torch.float16):
        super().__init__()
        self.prenorm = prenorm
        store = dtype if prenorm else torch.float16
        # Buffers follow .to(device).
        self.register_buffer("image", _stored(tokens.image, prenorm=prenorm, dtype=store), persistent=False)
        self.register_buffer("image_mask", torch.from_numpy(np.array(tokens.image_mask, dtype=bool)), persistent=False)
        self.register_buffer("text", _stored(tokens.text, prenorm=prenorm, dtype=store), persistent=False)
        self.register_buffer("text_mask", torch.from_numpy(np.array(tokens.text_mask, dtype=bool)), persistent=False)

    @property
    def image_dim(self) -> int:
        return int(self.image.shape[-1])

    @property
    def text_dim(self) -> int:
        return int(self.text.shape[-1])

    def forward(self, items: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """items (N,) -> image (N, Ti, Ci), image_mask (N, Ti), text (N, Tt, Ct), text_mask (N, Tt), in the
        store's dtype (the projection casts)."""
        return (self.image.index_select(0, items), self.image_mask[items],     # index_select: ~2x faster
                self.text.index_select(0, items), self.text_mask[items])       # than [] for big rows


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


def pooled_features(tokens: "ItemTokens", *, modalities: Sequence[str], chunk: int = 512) -> Tensor:
    """(I+1, sum C) masked mean-pooled encoder tokens, L2-normalised per modality, concatenated.

    A missing modality (all tokens masked) pools to zeros. Computed in chunks so a memory-mapped
    cache is never fully materialised as float32.
    """
    parts = []
    for m in (m for m in MODALITIES if m in modalities):
        x_all, mask_all = getattr(tokens, m), getattr(tokens, f"{m}_mask")
        rows = []
        for start in range(0, x_all.shape[0], chunk):
            x = torch.from_numpy(np.asarray(x_all[start:start + chunk], dtype=np.float32))   # (n, T, C)
            mask = torch.from_numpy(np.asarray(mask_all[start:start + chunk], dtype=bool))    # (n, T)
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
