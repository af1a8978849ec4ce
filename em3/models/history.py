"""The content encoder: target and history items to content embeddings under one history strategy.

Strategies (`model.history.strategy`):
- `lora`: targets through the full trainable Fusion-Q-Former with its LoRA adapters switched off;
  history items through the same base weights, detached (gradient stopped), with the adapters on,
  so the long sequence trains only the adapters.
- `shared`: history through the fully trainable module, like the targets.
- `frozen`: history under torch.no_grad, no adapters.
- `precomputed`: frozen pooled encoder features + a trainable projection, no Q-Former, for both.

Shape letters: B batch, L history length, N items, D content size.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import Tensor, nn
from torch.func import functional_call

from em3.config import ConfigError, ModelConfig
from em3.models.content import ItemTokenStore, PrecomputedContent
from em3.models.fusion import FusionQFormer

if TYPE_CHECKING:
    from em3.data.cache import ItemTokens

ADAPTER = "history"


def _is_adapter(name: str) -> bool:
    return "lora_" in name


@contextmanager
def adapters_off(module: nn.Module) -> Iterator[None]:
    """Run `module` as its base model: peft LoRA layers skip their adapters (requires_grad untouched,
    unlike peft's enable_adapters, so DDP and the optimiser see a fixed parameter set)."""
    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    before = [layer._disable_adapters for layer in layers]
    for layer in layers:
        layer._disable_adapters = True
    try:
        yield
    finally:
        for layer, old in zip(layers, before):
            layer._disable_adapters = old


def add_lora(fusion: FusionQFormer, cfg: ModelConfig) -> None:
    """Inject peft LoRA adapters into `fusion` in place, keeping its base weights trainable."""
    h = cfg.history
    present = {name.rsplit(".", 1)[-1] for name, m in fusion.named_modules() if isinstance(m, nn.Linear)}
    targets = [t for t in h.lora_targets if t in present]
    if not targets:
        raise ConfigError(f"model.history.lora_targets: none of {list(h.lora_targets)} is a linear layer of the "
                          f"{cfg.fusion.mode!r} Fusion-Q-Former (it has {sorted(present)})")
    lora = LoraConfig(r=h.lora_rank, lora_alpha=h.lora_alpha, lora_dropout=h.lora_dropout, target_modules=targets)
    inject_adapter_in_model(lora, fusion, adapter_name=ADAPTER)
    # peft froze every non-adapter weight; the target path trains them, so switch them back on.
    for _, p in fusion.named_parameters():
        p.requires_grad_(True)


class ContentEncoder(nn.Module):
    """Encodes target and history items into D-dim content embeddings, each unique item once."""

    def __init__(self, cfg: ModelConfig, *, tokens: "ItemTokens"):
        super().__init__()
        self.strategy = cfg.history.strategy
        self.dedup = cfg.history.dedup
        self.dim = cfg.fusion.dim
        self.fusion: FusionQFormer | None = None
        self.precomputed: PrecomputedContent | None = None
        if self.strategy == "precomputed":
            self.precomputed = PrecomputedContent(tokens, modalities=cfg.fusion.modalities, dim=cfg.fusion.dim)
            return
        self.store = ItemTokenStore(tokens)
        self.fusion = FusionQFormer(cfg.fusion, image_dim=self.store.image_dim, text_dim=self.store.text_dim)
        if self.strategy == "lora":
            add_lora(self.fusion, cfg)

    # ---- one item set through one path ----

    def embed(self, items: Tensor, *, history: bool = False) -> Tensor:
        """items (N,) -> (N, D) through the target path, or the history path when `history`."""
        if self.precomputed is not None:
            return self.precomputed(items)
        inputs = self.store(items)
        if not history or self.strategy == "shared":
            with adapters_off(self.fusion):
                return self.fusion(*inputs).embedding
        if self.strategy == "frozen":
            with torch.no_grad():
                return self.fusion(*inputs).embedding
        # lora: the base weights enter detached, so only the adapters receive gradient.
        base = {n: p.detach() for n, p in self.fusion.named_parameters() if not _is_adapter(n)}
        return functional_call(self.fusion, base, inputs).embedding

    def _encode(self, items: Tensor, *, history: bool) -> Tensor:
        """items (...) -> (..., D); with dedup each unique item is encoded once; padding (0) -> zeros."""
        flat = items.reshape(-1)
        if self.dedup:
            uniq, inverse = torch.unique(flat, return_inverse=True)
            emb = self.embed(uniq, history=history) * (uniq > 0).unsqueeze(-1)   # (U, D)
            emb = emb[inverse]                                                   # (N, D)
        else:
            emb = self.embed(flat, history=history) * (flat > 0).unsqueeze(-1)   # (N, D)
        return emb.reshape(*items.shape, -1)

    def forward(self, target: Tensor, history: Tensor) -> tuple[Tensor, Tensor]:
        """target (B,) or (B*K,), history (B, L) -> target content (.., D), history content (B, L, D)."""
        if self.strategy in ("shared", "precomputed"):
            # One function for both roles: encode the union of target and history items once.
            both = self._encode(torch.cat([target.reshape(-1), history.reshape(-1)]), history=False)
            n = target.numel()
            return both[:n].reshape(*target.shape, -1), both[n:].reshape(*history.shape, -1)
        # lora/frozen compute targets and history differently (gradient, adapters), so an item in both
        # roles is encoded once per role.
        return self._encode(target, history=False), self._encode(history, history=True)

    def attention(self, items: Tensor) -> list[Tensor]:
        """Per layer (N, h, Nq, Ti+Tt) attention of the target path; [] without queries."""
        if self.fusion is None:
            return []
        with adapters_off(self.fusion):
            return self.fusion(*self.store(items), return_attention=True).attention or []

    def history_trainable_parameters(self) -> int:
        """Parameters the history path can train (LoRA adapters under `lora`)."""
        if self.precomputed is not None:
            return sum(p.numel() for p in self.precomputed.parameters() if p.requires_grad)
        if self.strategy == "frozen":
            return 0
        params = self.fusion.named_parameters()
        if self.strategy == "lora":
            return sum(p.numel() for n, p in params if _is_adapter(n))
        return sum(p.numel() for _, p in params if p.requires_grad)
