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
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import Tensor, nn
from torch.func import functional_call

from em3.config import ConfigError, ModelConfig, SpeedConfig
from em3.models.content import ItemTokenStore, PrecomputedContent
from em3.models.fusion import FusionQFormer
from em3.models.precision import DTYPES, resolve_compute_dtype
from em3.models.shared_reads import stacked_pooled

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


class _Apply(nn.Module):
    """forward(fn) = fn(fusion): lets functional_call run any function of the fusion with substituted parameters
    (built per call, never a submodule of the encoder, so no parameter is registered twice)."""

    def __init__(self, fusion: FusionQFormer):
        super().__init__()
        self.fusion = fusion

    def forward(self, fn: Callable[[FusionQFormer], Any]) -> Any:
        return fn(self.fusion)


def mean_pooled(cfg: ModelConfig, speed: SpeedConfig, tokens: "ItemTokens") -> tuple[str, ...]:
    """The modalities speed.pool_mean_tokens stores pre-averaged: under mean fusion with prenormed tokens, each
    one without a trainable top layer, unless token_proj carries a LoRA adapter with dropout (its draws on
    every token would differ from one draw on the mean)."""
    if not (speed.pool_mean_tokens and speed.prenorm_tokens and cfg.fusion.mode == "mean"):
        return ()
    if cfg.history.strategy == "lora" and "token_proj" in cfg.history.lora_targets and cfg.history.lora_dropout > 0:
        return ()
    return tuple(m for m in cfg.fusion.modalities if m in tokens.names and tokens[m].top is None)


class ContentEncoder(nn.Module):
    """Encodes target and history items into D-dim content embeddings, each unique item once."""

    def __init__(self, cfg: ModelConfig, *, tokens: "ItemTokens", speed: SpeedConfig = SpeedConfig()):
        super().__init__()
        self.strategy = cfg.history.strategy
        self.dedup = cfg.history.dedup
        self.dim = cfg.fusion.dim
        self.fusion: FusionQFormer | None = None
        self.precomputed: PrecomputedContent | None = None
        if self.strategy == "precomputed":
            self.precomputed = PrecomputedContent(tokens, modalities=cfg.fusion.modalities, dim=cfg.fusion.dim)
            return
        dtype = DTYPES[resolve_compute_dtype(speed.compute_dtype)]
        self.store = ItemTokenStore(tokens, prenorm=speed.prenorm_tokens, dtype=dtype, modalities=cfg.fusion.modalities,
                                    pca=speed.token_pca, pool_mean=mean_pooled(cfg, speed, tokens))
        self.fusion = FusionQFormer(cfg.fusion, dims=self.store.dims,
                                    prenorm=speed.prenorm_tokens, compute_dtype=dtype,
                                    queries_only_last_layer=speed.queries_only_last_layer, tops=self.store.tops,
                                    fold_token_proj=speed.fold_token_proj, fold_attention=speed.fold_attention)
        if self.strategy == "lora":
            add_lora(self.fusion, cfg)
        # One projection serves both roles only when the projection has no adapter (the history role
        # would otherwise project differently) and items are deduplicated.
        # Folded, no item is projected at all (em3/models/fold.py): nothing to share.
        self.project_once = (speed.project_once and self.dedup and self.strategy in ("lora", "frozen")
                             and "token_proj" not in cfg.history.lora_targets and not self.fusion.fold)
        # W + s·BA is the adapted layer's map only without dropout on the adapter's input.
        self.merge_lora = speed.merge_lora_history and cfg.history.lora_dropout == 0.0
        # Both paths over the targets' tokens in one read (em3/models/shared_reads.py): lora, one projection,
        # and the folded one-layer queries-only attention in both paths (merged, the history path is linear too).
        self.shared_reads = (speed.shared_token_reads and self.project_once and self.strategy == "lora"
                             and self.merge_lora and self.fusion._shared_queries_fold())

    # ---- one item set through one path ----

    def embed(self, items: Tensor, *, history: bool = False) -> Tensor:
        """items (N,) -> (N, D) through the target path, or the history path when `history`."""
        if self.precomputed is not None:
            return self.precomputed(items)
        return self._fuse(self.store(items), history=history, projected=False)

    def _fuse(self, inputs: dict | tuple, *, history: bool, projected: bool) -> Tensor:
        """Store inputs (or, with `projected`, `FusionQFormer.project`'s output) -> (N, D) through one path."""
        return self._in_path(lambda fusion: fusion(inputs, projected=projected).embedding, history=history)

    def _in_path(self, fn: Callable[[FusionQFormer], Any], *, history: bool) -> Any:
        """fn(fusion) with one path's parameters: the target path (adapters off), or the history path (shared:
        the target's; frozen: under no_grad; lora: the base weights detached, so only the adapters train)."""
        if not history or self.strategy == "shared":
            with adapters_off(self.fusion):
                return fn(self.fusion)
        if self.strategy == "frozen":
            with torch.no_grad():
                return fn(self.fusion)
        base = {f"fusion.{n}": p.detach() for n, p in self.fusion.named_parameters() if not _is_adapter(n)}
        if not self.merge_lora:
            return functional_call(_Apply(self.fusion), base, (fn,))
        # merged: each adapted layer as one Linear with W.detach() + s·BA (gradient reaches A and B through it)
        merged = {f"fusion.{k}": w for k, w in self._merged_weights().items()}
        with adapters_off(self.fusion):
            return functional_call(_Apply(self.fusion), {**base, **merged}, (fn,))

    def _merged_weights(self) -> dict[str, Tensor]:
        """{'<layer>.base_layer.weight': W.detach() + s·B@A} for every LoRA-adapted layer of the fusion."""
        out = {}
        for name, layer in self.fusion.named_modules():
            if isinstance(layer, LoraLayer) and ADAPTER in layer.lora_A:
                delta = layer.lora_B[ADAPTER].weight @ layer.lora_A[ADAPTER].weight      # (out, r) @ (r, in)
                out[f"{name}.base_layer.weight"] = layer.base_layer.weight.detach() + layer.scaling[ADAPTER] * delta
        return out

    def _encode_rows(self, items: Tensor, *, history: bool) -> tuple[Tensor, Tensor]:
        """items (...) -> (table (U, D), index (...)) with table[index] the items' content; with dedup each
        unique item is encoded once (else every position is a row); padding (0) -> zeros."""
        flat = items.reshape(-1)
        if self.dedup:
            uniq, inverse = torch.unique(flat, return_inverse=True)
            return self.embed(uniq, history=history) * (uniq > 0).unsqueeze(-1), inverse.reshape(items.shape)
        emb = self.embed(flat, history=history) * (flat > 0).unsqueeze(-1)      # (N, D)
        return emb, torch.arange(flat.numel(), device=flat.device).reshape(items.shape)

    def _encode(self, items: Tensor, *, history: bool) -> Tensor:
        """items (...) -> (..., D), as `_encode_rows` gathered."""
        table, index = self._encode_rows(items, history=history)
        return table[index]

    def _encode_projected_once(self, target: Tensor, history: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """lora/frozen with one projection per item: the targets' unique items are projected with gradient
        (the target path trains the projection); the history's other items without; the history path
        reads the targets' projections detached (its gradient stopped there, as under functional_call).
        Returns target content (.., D) and the history's (table (Uh, D), index (B, L)), as `encode`."""
        t_flat, h_flat = target.reshape(-1), history.reshape(-1)
        t_uniq, t_pos = torch.unique(t_flat, return_inverse=True)              # (Ut,), (Nt,)
        h_uniq, h_pos = torch.unique(h_flat, return_inverse=True)              # (Uh,), (Nh,)
        t_tokens, t_masks = self.fusion.project(self.store(t_uniq))           # each (Ut, T_m, D)
        # each history item's row in [targets; history-only items]
        slot = torch.searchsorted(t_uniq, h_uniq).clamp(max=t_uniq.numel() - 1)
        shared = t_uniq[slot] == h_uniq                                        # (Uh,) also a target
        only = h_uniq[~shared]                                                 # (Uo,)
        rows = torch.where(shared, slot, t_uniq.numel() + torch.cumsum(~shared, 0) - 1)   # (Uh,)
        with torch.no_grad():
            o_tokens, o_masks = self.fusion.project(self.store(only))         # each (Uo, T_m, D)
        if self.shared_reads:
            t_emb, h_emb = self._fuse_shared_reads(t_tokens, t_masks, o_tokens, o_masks, rows)
        else:
            h_tokens = [torch.cat([t.detach(), o])[rows] for t, o in zip(t_tokens, o_tokens)]
            h_masks = [torch.cat([t, o])[rows] for t, o in zip(t_masks, o_masks)]
            t_emb = self._fuse((t_tokens, t_masks), history=False, projected=True)  # (Ut, D)
            h_emb = self._fuse((h_tokens, h_masks), history=True, projected=True)   # (Uh, D)
        t_emb = (t_emb * (t_uniq > 0).unsqueeze(-1))[t_pos]                     # (Nt, D), padding -> 0
        h_emb = h_emb * (h_uniq > 0).unsqueeze(-1)                              # (Uh, D)
        return t_emb.reshape(*target.shape, -1), (h_emb, h_pos.reshape(history.shape))

    def _fuse_shared_reads(self, t_tokens: list[Tensor], t_masks: list[Tensor], o_tokens: list[Tensor],
                           o_masks: list[Tensor], rows: Tensor) -> tuple[Tensor, Tensor]:
        """`_encode_projected_once`'s two fusions with the targets' tokens read once for both paths:
        -> target embeddings (Ut, D) and the history's (Uh, D), rows[i] = history item i's row in
        [targets; history-only items]. The dropout draws as the two `_fuse` calls: the targets', then the history's."""
        vectors = lambda fusion: fusion.query_vectors()                      # noqa: E731
        target_path, history_path = self._in_path(vectors, history=False), self._in_path(vectors, history=True)
        t_pooled, th_pooled = stacked_pooled([target_path, history_path], t_tokens, t_masks)   # (Ut, h·Q, D) each
        (o_pooled,) = stacked_pooled([history_path], o_tokens, o_masks)                       # (Uo, h·Q, D)
        h_pooled = torch.cat([th_pooled, o_pooled])[rows]                                      # (Uh, h·Q, D)
        t_emb = self._in_path(lambda fusion: fusion.embed_pooled(t_pooled), history=False)   # (Ut, D)
        h_emb = self._in_path(lambda fusion: fusion.embed_pooled(h_pooled), history=True)    # (Uh, D)
        return t_emb, h_emb

    def forward(self, target: Tensor, history: Tensor) -> tuple[Tensor, Tensor]:
        """target (B,) or (B*K,), history (B, L) -> target content (.., D), history content (B, L, D)."""
        target_content, (table, index) = self.encode(target, history)
        return target_content, table[index]

    def encode(self, target: Tensor, history: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """As `forward`, with the history content as (table (U, D), index (B, L)): table[index] is it
        (DIN's attention computes its key term once per table row; rankers.TargetAttention)."""
        if self.strategy in ("shared", "precomputed"):
            # One function for both roles: encode the union of target and history items once.
            table, index = self._encode_rows(torch.cat([target.reshape(-1), history.reshape(-1)]), history=False)
            n = target.numel()
            return table[index[:n]].reshape(*target.shape, -1), (table, index[n:].reshape(history.shape))
        if self.project_once:
            return self._encode_projected_once(target, history)
        # lora/frozen compute targets and history differently (gradient, adapters), so an item in both
        # roles is encoded once per role.
        return self._encode(target, history=False), self._encode_rows(history, history=True)

    @torch.no_grad()
    def catalogue(self, num_items: int, *, batch_size: int = 512) -> tuple[Tensor, Tensor]:
        """(I+1, D) content of every item through the target path and through the history path (row 0
        zeros), in the module's current mode; the two are one tensor where the paths agree."""
        device = next(iter(self.parameters())).device
        items = torch.arange(1, num_items + 1, device=device)
        zero = torch.zeros(1, self.dim, device=device)
        target = torch.cat([zero, *(self.embed(c).float() for c in items.split(batch_size))])
        if self.strategy != "lora":   # frozen: the history path is the target path without gradient
            return target, target
        history = torch.cat([zero, *(self.embed(c, history=True).float() for c in items.split(batch_size))])
        return target, history

    def attention(self, items: Tensor) -> tuple[list[Tensor], tuple[tuple[str, int], ...]]:
        """Per layer (N, h, Nq, T) attention of the target path over the fused tokens, and the (modality, T_m)
        segments of its columns; ([], ()) without queries."""
        if self.fusion is None:
            return [], ()
        with adapters_off(self.fusion):
            out = self.fusion(self.store(items), return_attention=True)
        return out.attention or [], out.segments

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
