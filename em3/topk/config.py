"""The frozen config of one top-K run: model, training protocol and the authors' public settings.

Kept apart from `em3/config.py` (the CTR config tree) because top-K runs share none of its
sections; the same conventions hold: every field has help text, `__post_init__` raises
`ConfigError` naming the field, `to_dict` / `from_dict` (strict) / `config_hash` serialise.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from em3.config import ConfigError, coerce_value

TOPK_MODELS = ("vbpr", "lightgcn", "freedom", "em3_freedom")
CONTENT_INPUTS = ("pooled", "tokens")
TOPK_DEVICES = ("auto", "cpu", "cuda")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _check(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"topk.{name}: {message}")


@dataclass(frozen=True)
class TopKConfig:
    model: str = field(default="freedom", metadata=_help("Top-K model: vbpr, lightgcn, freedom or em3_freedom."))
    epochs: int = field(default=1000, metadata=_help("Maximum training epochs (MMRec default 1000; early stop ends sooner)."))
    batch_size: int = field(default=2048, metadata=_help("BPR triples (user, positive, one sampled negative) per step."))
    eval_batch_size: int = field(default=4096, metadata=_help("Users scored at once in full-ranking evaluation."))
    lr: float = field(default=1e-3, metadata=_help("Adam learning rate."))
    reg_weight: float = field(default=1e-4, metadata=_help(
        "Auxiliary-loss weight: L2 embedding penalty (VBPR, LightGCN) or the modality-feature BPR terms (FREEDOM, EM3)."))
    embedding_dim: int = field(default=64, metadata=_help("ID and feature embedding size."))
    n_layers: int = field(default=2, metadata=_help("User-item graph layers (LightGCN n_layers, FREEDOM n_ui_layers)."))
    n_mm_layers: int = field(default=1, metadata=_help("Item-item (kNN) graph layers of FREEDOM and EM3."))
    knn_k: int = field(default=10, metadata=_help("Neighbours per item in the frozen item-item kNN graph."))
    mm_image_weight: float = field(default=0.1, metadata=_help(
        "Weight of the image kNN graph in the item-item graph (text gets 1 - weight)."))
    edge_dropout: float = field(default=0.8, metadata=_help(
        "Degree-sensitive edge pruning rate: share of user-item edges dropped each epoch (FREEDOM 'dropout')."))
    cic_weight: float = field(default=1e-3, metadata=_help("Content-ID contrastive loss weight lambda (EM3; 0 = off)."))
    cic_temperature: float = field(default=0.1, metadata=_help("CIC temperature tau (authors' grid 0.1, 0.5)."))
    cic_negatives: int = field(default=16, metadata=_help("K negatives of CIC, sampled uniformly from all items."))
    content_input: str = field(default="pooled", metadata=_help(
        "EM3 content tokens: pooled (one token per modality, as the authors' public code) or tokens (all encoder tokens)."))
    fusion_queries: int = field(default=2, metadata=_help("Fusion-Q-Former learnable queries N_q (authors' grid 1, 2)."))
    fusion_layers: int = field(default=1, metadata=_help("Fusion-Q-Former layers."))
    fusion_heads: int = field(default=4, metadata=_help("Fusion-Q-Former attention heads; must divide embedding_dim."))
    fusion_dropout: float = field(default=0.5, metadata=_help("Fusion-Q-Former hidden dropout (authors' grid 0.5, 0.8)."))
    patience: int = field(default=20, metadata=_help("Early stop after this many epochs without a better validation Recall@20 (0 = never)."))
    topk: tuple[int, ...] = field(default=(10, 20, 50), metadata=_help("Cut-offs K of Recall/NDCG/Precision@K."))
    seed: int = field(default=0, metadata=_help("Seed of initialisation, negative sampling and edge pruning."))
    device: str = field(default="auto", metadata=_help("auto (CUDA if available), cpu or cuda."))

    def __post_init__(self) -> None:
        _check(self.model in TOPK_MODELS, "model", f"unknown model {self.model!r}; expected one of {', '.join(TOPK_MODELS)}")
        _check(self.content_input in CONTENT_INPUTS, "content_input",
               f"unknown value {self.content_input!r}; expected one of {', '.join(CONTENT_INPUTS)}")
        _check(self.device in TOPK_DEVICES, "device", f"unknown value {self.device!r}; expected one of {', '.join(TOPK_DEVICES)}")
        for n in ("epochs", "batch_size", "eval_batch_size", "lr", "embedding_dim", "n_layers", "knn_k",
                  "cic_temperature", "cic_negatives", "fusion_queries", "fusion_layers", "fusion_heads"):
            _check(getattr(self, n) > 0, n, f"must be > 0, got {getattr(self, n)!r}")
        for n in ("reg_weight", "cic_weight", "n_mm_layers", "patience"):
            _check(getattr(self, n) >= 0, n, f"must be >= 0, got {getattr(self, n)!r}")
        for n in ("edge_dropout", "fusion_dropout"):
            _check(0.0 <= getattr(self, n) < 1.0, n, f"must be in [0, 1), got {getattr(self, n)!r}")
        _check(0.0 <= self.mm_image_weight <= 1.0, "mm_image_weight", f"must be in [0, 1], got {self.mm_image_weight!r}")
        _check(self.embedding_dim % self.fusion_heads == 0, "embedding_dim",
               f"{self.embedding_dim} is not divisible by fusion_heads={self.fusion_heads}")
        _check(len(self.topk) > 0 and all(k > 0 for k in self.topk), "topk", f"cut-offs must be > 0, got {self.topk!r}")
        _check(20 in self.topk, "topk", f"must contain 20 (early stopping watches validation Recall@20), got {self.topk!r}")

    @property
    def valid_metric(self) -> str:
        return "recall@20"


def to_dict(cfg: TopKConfig) -> dict[str, Any]:
    """Plain JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(data: Mapping[str, Any]) -> TopKConfig:
    """Strict inverse of to_dict: unknown keys and wrong types raise ConfigError naming the field."""
    names = {f.name: f for f in fields(TopKConfig)}
    unknown = [k for k in data if k not in names]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(names), n=3)
        hint = f"; did you mean {', '.join('topk.' + c for c in close)}?" if close else ""
        raise ConfigError(f"topk.{unknown[0]}: unknown config key{hint}")
    hints = {"tuple[int, ...]": tuple[int, ...], "int": int, "float": float, "str": str, "bool": bool}
    kwargs = {k: coerce_value(v, hints[str(names[k].type)], f"topk.{k}") for k, v in data.items()}
    return TopKConfig(**kwargs)


def with_overrides(cfg: TopKConfig, overrides: Mapping[str, Any]) -> TopKConfig:
    """cfg with fields replaced (values coerced and validated like from_dict)."""
    return from_dict({**to_dict(cfg), **overrides})


def config_hash(cfg: TopKConfig, *, dataset: str) -> str:
    """Short stable hash of the config and dataset name: the bench's resume key (with model and seed)."""
    blob = json.dumps({"dataset": dataset, **to_dict(cfg)}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]
