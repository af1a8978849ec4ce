"""The EM3 model: ID embeddings + content encoder + ranker + CIC heads; the whole forward pass, top to bottom.

Shape letters: B batch, L history length, K candidates (score) or sampled negatives (CIC),
U unique target items of a batch, I items (rows I+1, row 0 = padding), Di item/user-ID size,
Du the ranker's user input (Di, + F*Di with F user-feature fields), D content size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from em3.config import Config, ConfigError
from em3.data.schema import PAD_INDEX, UNKNOWN_ID, SampleSet
from em3.models.content import check_tokens
from em3.models.compiled import compile_modules
from em3.models.dropout import use_fast_dropout
from em3.models.history import ContentEncoder
from em3.models.history_cut import cut_mask
from em3.models.precision import ranker_autocast
from em3.models.rankers import PairScores, RankerOutput, build_ranker, gather_rows
from em3.models.user_features import UserFeatureEmbedding

if TYPE_CHECKING:
    from em3.data.cache import ItemTokens


# The most (candidate, history item) pairs `pair_scores` tabulates: two float32 (I, I+1) tables of 128 MiB
# each, a catalogue of about 5,800 items. MovieLens-100K's 1,682 items take 2.8M pairs (11 MiB a table).
PAIR_SCORES_MAX = 1 << 25


@dataclass
class ModelOutput:
    logits: Tensor                          # (B,)
    cic_content: Tensor | None = None       # (U, D) L2-normalised, one row per unique target item
    cic_id: Tensor | None = None            # (U, D) L2-normalised, same rows
    cic_neg_content: Tensor | None = None   # (U, K, D) sampled negatives (model.cic.negatives = sampled, training)
    cic_neg_id: Tensor | None = None        # (U, K, D)
    history_attention: Tensor | None = None  # (B, L) DIN's ID attention over the history; None for DCN-v2
    history_content_attention: Tensor | None = None  # (B, L) DIN's content attention; None without content


@dataclass
class Catalogue:
    """Every item's content through each path, encoded once (eval mode) for evaluation and ranking."""

    target: Tensor     # (I+1, D) row 0 zeros
    history: Tensor    # (I+1, D) the history path (lora adapters on); the same tensor where the paths agree


class EM3Model(nn.Module):
    """A ranker over ID embeddings, with EM3's content module and CIC heads when content is on."""

    def __init__(self, cfg: Config, *, samples: SampleSet, tokens: "ItemTokens | None"):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.num_items = samples.num_items
        # Data-derived lookups are non-persistent buffers: rebuilt from the samples, not checkpointed.
        self.register_buffer("id_index", torch.as_tensor(samples.id_index, dtype=torch.long), persistent=False)
        warm = torch.nonzero(self.id_index > 1).flatten()                    # item indices with their own ID
        self.register_buffer("warm_items", warm, persistent=False)
        self.user_emb = nn.Embedding(samples.num_users, m.ranker.id_dim)
        self.item_id_emb = nn.Embedding(samples.num_id_rows, m.ranker.id_dim, padding_idx=PAD_INDEX)
        nn.init.normal_(self.user_emb.weight, std=0.05)
        nn.init.normal_(self.item_id_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_id_emb.weight[PAD_INDEX].zero_()
        self.content = ContentEncoder(m, tokens=tokens, speed=cfg.speed) if m.use_content else None
        user_fields = samples.user_features.num_fields if m.ranker.user_features else 0
        self.ranker = build_ranker(m.ranker, content_dim=m.fusion.dim if m.use_content else 0,
                                   user_fields=user_fields, split_attention=cfg.speed.din_split_attention,
                                   fused_unit=cfg.speed.din_fused_unit, packed_history=cfg.speed.din_pack_history)
        self.fused_gathers = cfg.speed.din_fused_unit   # the history's rows by index_select (rankers.gather_rows)
        self.ranker_dtype = cfg.speed.ranker_dtype     # fp32 | bf16 | auto: the ranker's forward (precision.py)
        self.table_keys = cfg.speed.din_table_keys and m.ranker.kind == "din"
        self.pair_scores_on = cfg.speed.din_pair_scores and m.ranker.kind == "din"
        self.cut, self.cut_k = m.history.cut, m.history.cut_k
        self.cut_active = m.history.cut_k > 0
        self.use_cic = m.use_content and m.cic.weight > 0
        if self.use_cic:
            # CIC projection heads (authors: Linear D->D each); the ID side also maps id_dim -> D.
            self.cic_content_head = nn.Linear(m.fusion.dim, m.fusion.dim)
            self.cic_id_head = nn.Linear(m.ranker.id_dim, m.fusion.dim)
        # Built last, so without user features every other parameter is initialised as it always was.
        self.user_feature_emb = (UserFeatureEmbedding(samples.user_features, dim=m.ranker.id_dim)
                                 if user_fields else None)

    @property
    def has_content(self) -> bool:
        """False for the ID-only arm (no content module built)."""
        return self.content is not None

    # ---- the forward pass ----

    def user_vector(self, user: Tensor) -> Tensor:
        """user (B,) -> (B, Du): the user-ID embedding, the user-feature embeddings appended when they are on."""
        vec = self.user_emb(user)                                               # (B, Di)
        if self.user_feature_emb is None:
            return vec
        return torch.cat([vec, self.user_feature_emb(user)], dim=-1)            # (B, Di + F*Di)

    def _id_rows(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """ID rows of the targets (B,) and history (B, L); in training, the batch's ID-dropout marks
        (`drop_item_id` (B,), `drop_history_id` (B, L) bool, from train.id_dropout) become the unknown ID."""
        target, history = self.id_index[batch["item"]], self.id_index[batch["history"]]
        if self.training and "drop_item_id" in batch:
            target = target.masked_fill(batch["drop_item_id"], UNKNOWN_ID)
        if self.training and "drop_history_id" in batch:
            history = history.masked_fill(batch["drop_history_id"], UNKNOWN_ID)
        return target, history

    def forward(self, batch: dict[str, Tensor], *, catalogue: Catalogue | None = None) -> ModelOutput:
        """The batch's logits (+ CIC projections); with `catalogue`, content is looked up, not encoded."""
        user, item, history = batch["user"], batch["item"], batch["history"]   # (B,), (B,), (B, L)

        # step 1: ID embeddings (cold and ID-dropped items share the UNKNOWN_ID row; padding is row 0)
        user_vec = self.user_vector(user)                                       # (B, Du)
        target_row, history_row = self._id_rows(batch)                          # (B,), (B, L)
        target_id = self.item_id_emb(target_row)                                # (B, Di)
        # DIN given the tables (speed.din_table_keys) gathers the history's rows itself, where it needs them
        # (packed, from the real items alone), unless the cut needs them first.
        # (index_select's backward does not zero the padding row's gradient as the embedding's does: it is
        # zero anyway, each padded position being masked out of attention and pooling)
        lazy = self.table_keys and self.fused_gathers and not self.cut_active
        history_id = None
        if not lazy:
            history_id = (gather_rows(self.item_id_emb.weight, history_row) if self.fused_gathers
                          else self.item_id_emb(history_row))                   # (B, L, Di)
        history_mask = history != PAD_INDEX                                     # (B, L)
        if self.cut_active:   # step 1b: the items this target sees; the rest become padding (never encoded)
            history_mask = cut_mask(target_id, history_id, history_mask, cut=self.cut, k=self.cut_k)
            history = history.masked_fill(~history_mask, PAD_INDEX)

        # step 2: content embeddings of the target and history items (unique items encoded once); the
        # history's as (table, index) too: DIN's key term is then computed once per table row
        target_content = history_content = content_rows = None
        if self.content is not None and catalogue is not None:
            target_content, content_rows = catalogue.target[item], (catalogue.history, history)
        elif self.content is not None:
            target_content, content_rows = self.content.encode(item, history)   # (B, D), ((U, D), (B, L))
        if content_rows is not None and not lazy:
            history_content = (gather_rows(*content_rows) if self.fused_gathers
                               else content_rows[0][content_rows[1]])             # (B, L, D)

        # step 3: the ranker scores (user, target, history)
        tables = {}
        if self.table_keys:
            tables = {"history_id_rows": (self.item_id_emb.weight, history_row), "history_content_rows": content_rows}
        ranked = self._rank(user_vec, target_id, history_id=history_id, history_mask=history_mask,
                            target_content=target_content, history_content=history_content, **tables)
        out = ModelOutput(logits=ranked.logits, history_attention=ranked.attention,       # (B,), (B, L)
                          history_content_attention=ranked.content_attention)
        if not self.use_cic:
            return out

        # step 4: CIC projections of the batch's unique target items (duplicates would be false negatives)
        uniq, inverse = torch.unique(item, return_inverse=True)                  # (U,), (B,)
        first = torch.full_like(uniq, item.numel()).scatter_reduce(
            0, inverse, torch.arange(item.numel(), device=item.device), reduce="amin")   # (U,) a row of each
        # CIC pairs an item's content with its own ID: an ID-dropped target is looked up again
        own_id = target_id[first] if "drop_item_id" not in batch else self.item_id_emb(self.id_index[uniq])
        out.cic_content = F.normalize(self.cic_content_head(target_content[first]), dim=-1)   # (U, D)
        out.cic_id = F.normalize(self.cic_id_head(own_id), dim=-1)                            # (U, D)

        # step 5: sampled negatives: K items drawn uniformly from the warm item table
        cic = self.cfg.model.cic
        if cic.negatives == "sampled" and self.training and self.warm_items.numel() > 0:
            # Departure from the authors: one draw of K shared by the batch (they draw K per item), so the
            # step encodes K extra items, not U*K; a draw may hit the positive itself, as theirs can.
            neg = self.warm_items[torch.randint(self.warm_items.numel(), (cic.num_negatives,),
                                                device=item.device)]             # (K,)
            neg_content = F.normalize(self.cic_content_head(self.content.embed(neg)), dim=-1)    # (K, D)
            neg_id = F.normalize(self.cic_id_head(self.item_id_emb(self.id_index[neg])), dim=-1)  # (K, D)
            out.cic_neg_content = neg_content.unsqueeze(0).expand(uniq.numel(), -1, -1)         # (U, K, D)
            out.cic_neg_id = neg_id.unsqueeze(0).expand(uniq.numel(), -1, -1)                   # (U, K, D)
        return out

    def score(self, user: Tensor, history: Tensor, items: Tensor, *, chunk: int = 2048) -> Tensor:
        """user (B,), history (B, L), candidate items (B, K) -> logits (B, K), for top-K recommendation.

        Content is encoded once per unique item and once per history; the ranker runs on at most
        `chunk` (user, candidate) rows at a time, so scoring a whole catalogue stays within memory.
        """
        b, k = items.shape
        flat = items.reshape(-1)                                                # (B*K,)
        user_vec = self.user_vector(user)                                       # (B, Du)
        target_id = self.item_id_emb(self.id_index[flat])                       # (B*K, Di)
        history_id = self.item_id_emb(self.id_index[history])                   # (B, L, Di)
        history_mask = history != PAD_INDEX                                     # (B, L)
        target_content = history_content = None
        if self.content is not None:
            target_content, history_content = self.content(flat, history)       # (B*K, D), (B, L, D)
        logits = []
        for rows in torch.arange(b * k, device=flat.device).split(chunk):
            owner = rows // k                                                   # (R,) the user row of each
            mask = history_mask[owner]                                          # (R, L)
            if self.cut_active:
                mask = cut_mask(target_id[rows], history_id[owner], mask, cut=self.cut, k=self.cut_k)
            ranked = self._rank(
                user_vec[owner], target_id[rows], history_id=history_id[owner], history_mask=mask,
                target_content=None if target_content is None else target_content[rows],
                history_content=None if history_content is None else history_content[owner])
            logits.append(ranked.logits)                                        # (R,)
        return torch.cat(logits).reshape(b, k)

    @torch.no_grad()
    def catalogue(self) -> Catalogue | None:
        """Every item's content through both paths in eval mode (train mode restored); None without content."""
        if self.content is None:
            return None
        was_training = self.training
        self.eval()
        try:
            return Catalogue(*self.content.catalogue(self.num_items))
        finally:
            self.train(was_training)

    @torch.no_grad()
    def pair_scores(self, catalogue: Catalogue | None, *, rows: int, history_len: int) -> PairScores | None:
        """DIN's attention scores of every candidate 1..I against every item 0..I as a history item, for
        `score_catalogue` over `rows` histories of `history_len` (speed.din_pair_scores); in eval mode.

        DIN's unit reads the (candidate, history item) pair alone, so over a whole ranking pass these
        I·(I+1) scores replace rows·I·L per-pair evaluations (the history cut's per-candidate mask is
        applied to the gathered scores as to computed ones). None where they would not pay (no more history
        slots in the pass than items, a catalogue over PAIR_SCORES_MAX pairs), for DCN-v2, or with the lever off.
        """
        n = self.num_items
        if not self.pair_scores_on or rows * history_len <= n + 1 or n * (n + 1) > PAIR_SCORES_MAX:
            return None
        items = torch.arange(1, n + 1, device=self.id_index.device)              # (I,)
        id_table = self.item_id_emb(self.id_index)                               # (I+1, Di): row j = item j
        content = {} if self.content is None else dict(target_content=catalogue.target[items],
                                                        content_table=catalogue.history)   # (I, D), (I+1, D)
        with ranker_autocast(self.ranker_dtype):
            return self.ranker.pair_scores(id_table[items], id_table, **content)   # (I, I+1) per unit

    @torch.no_grad()
    def score_catalogue(self, user: Tensor, history: Tensor, catalogue: Catalogue | None,
                        scores: PairScores | None = None) -> Tensor:
        """user (B,), history (B, L) -> logits (B, I) of every item 1..I, in eval mode (call model.eval()).

        Content comes from `catalogue` (encoded once, see `catalogue()`); the ranker scores all pairs
        at once (DIN: its attention's target term once per item, or its units' scores gathered from
        `scores` = `pair_scores(...)`; DCN-v2: pooled histories once per user).
        """
        items = torch.arange(1, self.num_items + 1, device=user.device)          # (I,)
        history_mask = history != PAD_INDEX                                      # (B, L)
        target_id = self.item_id_emb(self.id_index[items])                       # (I, Di)
        history_id = self.item_id_emb(self.id_index[history])                    # (B, L, Di)
        if self.cut_active:                                                      # (B, I, L): per candidate
            history_mask = cut_mask(target_id, history_id, history_mask, cut=self.cut, k=self.cut_k, pairs=True)
        target_content = history_content = None
        if self.content is not None:
            target_content, history_content = catalogue.target[items], catalogue.history[history]
        with ranker_autocast(self.ranker_dtype):
            given = {} if scores is None else dict(scores=scores, history_index=history)
            logits = self.ranker.score_pairs(self.user_vector(user), target_id,
                                             history_id=history_id,
                                             history_mask=history_mask, target_content=target_content,
                                             history_content=history_content, **given)    # (B, I)
        return logits.float()

    def _rank(self, *args: Tensor, **kwargs: Tensor | None) -> RankerOutput:
        """The ranker's forward in `speed.ranker_dtype`; logits and attention back in float32."""
        with ranker_autocast(self.ranker_dtype):
            ranked = self.ranker(*args, **kwargs)
        as_fp32 = lambda t: None if t is None else t.float()   # noqa: E731
        return RankerOutput(logits=as_fp32(ranked.logits), attention=as_fp32(ranked.attention),
                            content_attention=as_fp32(ranked.content_attention))

    # ---- exports for evaluation and the dashboard ----

    @torch.no_grad()
    def item_content_embeddings(self, *, batch_size: int = 512) -> Tensor:
        """(I+1, D) content embedding of every item (row 0 zeros) in eval mode; (I+1, 0) without content."""
        device = self.id_index.device
        if self.content is None:
            return torch.zeros(self.num_items + 1, 0, device=device)
        was_training = self.training
        self.eval()
        try:
            items = torch.arange(1, self.num_items + 1, device=device)
            rows = [self.content.embed(chunk) for chunk in items.split(batch_size)]
            zero = torch.zeros(1, self.content.dim, device=device)
            return torch.cat([zero, *rows]).float()
        finally:
            self.train(was_training)

    @torch.no_grad()
    def item_id_embeddings(self) -> Tensor:
        """(I+1, Di) ID embedding of every item index, via id_index (cold items -> the unknown row)."""
        return self.item_id_emb(self.id_index).float()

    @torch.no_grad()
    def fusion_attention(self, items: Tensor) -> tuple[list[Tensor], tuple[tuple[str, int], ...]]:
        """Per layer (N, h, Nq, T) attention of the queries over the fused tokens and the (modality, T_m)
        segments of its columns; ([], ()) without queries."""
        if self.content is None:
            return [], ()
        was_training = self.training
        self.eval()
        try:
            layers, segments = self.content.attention(items)
            return [w.float() for w in layers], segments
        finally:
            self.train(was_training)

    # ---- parameters ----

    def content_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the content module, all under `content.` (Fusion-Q-Former, LoRA adapters)."""
        return [p for p in self.content.parameters() if p.requires_grad] if self.content is not None else []

    def ranker_parameters(self) -> list[nn.Parameter]:
        """Every other trainable parameter: ID, user and user-feature tables, the ranker, both CIC heads."""
        content = {id(p) for p in self.content_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in content]

    def param_groups(self, *, lr_content: float, lr_ranker: float) -> list[dict[str, Any]]:
        """AdamW parameter groups with the two learning rates (empty groups left out).

        "content" (lr_content) = `content_parameters()`; "ranker" (lr_ranker) = the rest. Both CIC
        projection heads sit in "ranker": fresh linear heads like the ranker's, not part of the content module.
        """
        groups = [{"params": self.content_parameters(), "lr": lr_content, "name": "content"},
                  {"params": self.ranker_parameters(), "lr": lr_ranker, "name": "ranker"}]
        return [g for g in groups if g["params"]]

    def count_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def history_trainable_parameters(self) -> int:
        """Parameters trained through the history path (LoRA adapters under `lora`, 0 without content)."""
        return self.content.history_trainable_parameters() if self.content is not None else 0


def build_model(cfg: Config, *, samples: SampleSet, tokens: "ItemTokens | None") -> EM3Model:
    """The model of `cfg` for this sample set; content arms need the item token cache."""
    if cfg.model.use_content:
        if tokens is None:
            raise ConfigError(f"model.use_content: arm {cfg.model.arm!r} needs item tokens, but tokens=None "
                              "(build the feature cache first, or use the id_only arm)")
        check_tokens(tokens, num_items=samples.num_items)
    model = EM3Model(cfg, samples=samples, tokens=tokens)
    if cfg.speed.fast_dropout:
        use_fast_dropout(model)
    compile_modules(model, cfg.speed.compile)
    return model
