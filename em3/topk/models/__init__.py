"""Top-K models (VBPR, LightGCN, FREEDOM, EM3-on-FREEDOM) and `build_model`, the one place that wires
a TopKConfig and TopKData into one of them.

Every model: forward(users (B,), pos (B,), neg (B,), *, cic_neg (B, K) | None) -> TopKOutput,
representations() -> ((U, D'), (I, D')) with score = user . item, pre_epoch(generator).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from em3.errors import DataError
from em3.topk.config import TopKConfig
from em3.topk.data import TopKData
from em3.topk.graphs import edges_of
from em3.topk.models.base import TopKOutput, unit_features
from em3.topk.models.em3_freedom import EM3Freedom, ItemContent
from em3.topk.models.freedom import Freedom
from em3.topk.models.lightgcn import LightGCN
from em3.topk.models.vbpr import VBPR

__all__ = ["build_model", "TopKOutput", "VBPR", "LightGCN", "Freedom", "EM3Freedom", "ItemContent"]


def _feature(x: np.ndarray | None) -> Tensor | None:
    return None if x is None else unit_features(torch.as_tensor(np.asarray(x, np.float32)))


def _content_inputs(cfg: TopKConfig, data: TopKData) -> dict[str, Tensor]:
    """The Fusion-Q-Former's item tokens: one pooled token per modality, or the cached encoder tokens."""
    if cfg.content_input == "tokens":
        if data.tokens is None or data.token_rows is None:
            raise DataError(f"{data.name}: content_input=tokens needs item tokens (the feature cache); "
                            "MMRec-format data has pooled features only")
        t, rows = data.tokens, data.token_rows
        return {"image": torch.as_tensor(np.asarray(t.image[rows], np.float32)),
                "image_mask": torch.as_tensor(np.asarray(t.image_mask[rows], bool)),
                "text": torch.as_tensor(np.asarray(t.text[rows], np.float32)),
                "text_mask": torch.as_tensor(np.asarray(t.text_mask[rows], bool))}
    out = {}
    for m, feat in (("image", data.image_feat), ("text", data.text_feat)):
        x = torch.as_tensor(np.asarray(feat, np.float32)) if feat is not None else torch.zeros(data.num_items, 1)
        out[m] = x.unsqueeze(1)                                        # (I, 1, C)
        out[f"{m}_mask"] = (x.abs().sum(1) > 0).unsqueeze(1)           # (I, 1): a zero vector = missing modality
    return out


def default_fusion(cfg: TopKConfig, *, image_dim: int, text_dim: int) -> nn.Module:
    """The project's Fusion-Q-Former with the authors' top-K settings (self-attention, D = embedding_dim)."""
    from em3.config import FusionConfig
    from em3.models.fusion import FusionQFormer

    fcfg = FusionConfig(mode="selfattn", num_queries=cfg.fusion_queries, num_layers=cfg.fusion_layers,
                        num_heads=cfg.fusion_heads, dim=cfg.embedding_dim, dropout=cfg.fusion_dropout)
    return FusionQFormer(fcfg, dims={"image": image_dim, "text": text_dim})


def build_model(cfg: TopKConfig, data: TopKData, *, fusion: nn.Module | None = None) -> nn.Module:
    """A fresh model of cfg.model on data (seed torch before calling). `fusion` replaces the Fusion-Q-Former (tests)."""
    edges = edges_of(data.train)
    image, text = _feature(data.image_feat), _feature(data.text_feat)
    common = {"num_users": data.num_users, "num_items": data.num_items}
    if cfg.model == "lightgcn":
        return LightGCN(**common, edges=edges, dim=cfg.embedding_dim, n_layers=cfg.n_layers)
    if image is None and text is None:
        raise DataError(f"{data.name}: model {cfg.model} needs item image or text features")
    if cfg.model == "vbpr":
        feats = torch.cat([x for x in (image, text) if x is not None], dim=1)   # (I, Ci+Ct)
        return VBPR(**common, features=feats, dim=cfg.embedding_dim)
    backbone = Freedom(**common, edges=edges, image=image, text=text, dim=cfg.embedding_dim, n_layers=cfg.n_layers,
                       n_mm_layers=cfg.n_mm_layers, knn_k=cfg.knn_k, image_weight=cfg.mm_image_weight,
                       edge_dropout=cfg.edge_dropout)
    if cfg.model == "freedom":
        return backbone
    inputs = _content_inputs(cfg, data)
    if fusion is None:
        fusion = default_fusion(cfg, image_dim=inputs["image"].shape[-1], text_dim=inputs["text"].shape[-1])
    return EM3Freedom(backbone=backbone, content=ItemContent(fusion, **inputs), dim=cfg.embedding_dim)
