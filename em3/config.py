"""The frozen dataclass config tree: the only home of defaults, presets and arms.

Every field carries `metadata={"help": ...}`; the dashboard's forms read it. Validation
happens in `__post_init__` and raises `ConfigError` (a `ValueError`) naming the field.
Serialise with `to_dict` / `from_dict` (strict) / `flatten` (MLflow params), change
fields with `with_overrides(cfg, {"model.fusion.num_queries": 4})`.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Mapping, get_type_hints

from em3.modalities import DEFAULT as DEFAULT_MODALITIES, NAMES as MODALITIES   # the registry (no heavy imports)

CONFIG_VERSION = 1

SOURCES = ("synthetic", "movielens-100k", "files")
SYNTHETIC_PRESETS = ("tiny", "demo", "small", "audio", "long")
FUSION_MODES = ("selfattn", "blip2", "mean")
HISTORY_STRATEGIES = ("lora", "shared", "frozen", "precomputed")
HISTORY_CUTS = ("last", "similar")          # em3/models/history_cut.py
RANKERS = ("din", "dcnv2")
CIC_NEGATIVES = ("in_batch", "sampled")
COMPUTE_DTYPES = ("auto", "fp32", "bf16")
COMPILE_TARGETS = ("off", "ranker", "fusion", "both")
IMAGE_TOPS = ("frozen", "trained")
DEVICES = ("auto", "cpu", "cuda")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "token_proj")
AUTO_USER_FEATURES = "auto"   # data.user_features: the source's own list (RawDataset.user_feature_columns)


class ConfigError(ValueError):
    """An invalid config value; the message names the field at fault."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _check(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {message}")


def _positive(obj: Any, *names: str, prefix: str) -> None:
    for n in names:
        _check(getattr(obj, n) > 0, f"{prefix}.{n}", f"must be > 0, got {getattr(obj, n)!r}")


def _choice(value: Any, choices: tuple[str, ...], name: str) -> None:
    _check(value in choices, name, f"unknown value {value!r}; expected one of {', '.join(choices)}")


def _check_user_features(names: tuple[str, ...]) -> None:
    """data.user_features: 'auto' alone, or distinct non-empty column names other than the key user_id."""
    name = "data.user_features"
    _check(AUTO_USER_FEATURES not in names or names == (AUTO_USER_FEATURES,), name,
           f"'auto' stands alone (the source's standard fields), got {list(names)}")
    _check(all(n.strip() for n in names), name, f"column names must be non-empty, got {list(names)}")
    _check("user_id" not in names, name, "'user_id' is the key of the users table, not a feature "
           "(the user-ID embedding is always on)")
    dup = sorted({n for n in names if names.count(n) > 1})
    _check(not dup, name, f"column {dup[0] if dup else ''!r} is named twice")


@dataclass(frozen=True)
class DataConfig:
    source: str = field(default="synthetic", metadata=_help("Dataset source: synthetic, movielens-100k or files."))
    preset: str = field(default="tiny", metadata=_help("Synthetic generator size: tiny (tests) or demo (dashboard)."))
    data_dir: str = field(default="", metadata=_help("Directory of a movielens-100k or files dataset; empty = $EM3_MOVIELENS_DIR."))
    positive_threshold: float = field(default=4.0, metadata=_help("A rating >= this is a positive (label 1)."))
    rating_min: float = field(default=1.0, metadata=_help("Lowest possible rating (for validating the threshold)."))
    rating_max: float = field(default=5.0, metadata=_help("Highest possible rating (for validating the threshold)."))
    max_history: int = field(default=50, metadata=_help("History length L: the last L earlier positives are kept."))
    val_frac: float = field(default=0.1, metadata=_help("Per-user chronological share of events for validation."))
    test_frac: float = field(default=0.1, metadata=_help("Per-user chronological share of events for test."))
    cold_item_frac: float = field(default=0.1, metadata=_help("Share of items withheld as cold (test_cold only)."))
    val_cold_item_frac: float = field(default=0.0, metadata=_help(
        "Share of items withheld as cold for validation (val_cold only), drawn from the items that are not "
        "test-cold; 0 = no val_cold split. Lets content settings be chosen on cold items without test."))
    split_seed: int = field(default=0, metadata=_help("Seed of the cold-item draw and the synthetic generator."))
    user_features: tuple[str, ...] = field(default=(AUTO_USER_FEATURES,), metadata=_help(
        "Users-table columns encoded as user features (model.ranker.user_features feeds them to the ranker): "
        "'auto' = the source's standard fields (MovieLens: age, gender, occupation, not zip; files: every "
        "column of users.csv|parquet but user_id; synthetic: none), or column names; empty = none. Text "
        "columns become vocabulary codes, numeric ones quantile buckets; code 0 = unknown or missing."))
    user_feature_buckets: int = field(default=10, metadata=_help(
        "Quantile buckets of a numeric user feature (edges from every user of the users table)."))
    item_fields: tuple[str, ...] = field(default=(AUTO_USER_FEATURES,), metadata=_help(
        "Item-table columns the tabular modality tokenises: 'auto' = the source's own list (MovieLens: year, "
        "runtime, vote_count, vote_average, original_language; files: the extra item columns; synthetic: "
        "none), or column names (e.g. year,runtime to leave TMDB's later vote counts out); empty = none."))

    def __post_init__(self) -> None:
        _choice(self.source, SOURCES, "data.source")
        _choice(self.preset, SYNTHETIC_PRESETS, "data.preset")
        _check(self.rating_min < self.rating_max, "data.rating_min", "must be below data.rating_max")
        _check(self.rating_min < self.positive_threshold <= self.rating_max, "data.positive_threshold",
               f"must lie in ({self.rating_min}, {self.rating_max}], got {self.positive_threshold}")
        _positive(self, "max_history", prefix="data")
        for n in ("val_frac", "test_frac", "cold_item_frac", "val_cold_item_frac"):
            _check(0.0 <= getattr(self, n) < 0.5, f"data.{n}", f"must be in [0, 0.5), got {getattr(self, n)}")
        _positive(self, "user_feature_buckets", prefix="data")
        _check_user_features(self.user_features)
        _check(AUTO_USER_FEATURES not in self.item_fields or self.item_fields == (AUTO_USER_FEATURES,),
               "data.item_fields", f"'auto' stands alone (the source's own fields), got {list(self.item_fields)}")
        _check(len(set(self.item_fields)) == len(self.item_fields), "data.item_fields",
               f"a column is named twice in {list(self.item_fields)}")


@dataclass(frozen=True)
class EncoderConfig:
    image_encoder: str = field(default="google/mobilenet_v2_1.0_224", metadata=_help(
        "Image encoder: a Hugging Face id or local path ($EM3_IMAGE_ENCODER overrides the default), or 'scratch'."))
    text_encoder: str = field(default="sentence-transformers/all-MiniLM-L6-v2", metadata=_help(
        "Text encoder: a Hugging Face id or local path ($EM3_TEXT_ENCODER overrides the default), or 'scratch'."))
    text_layers: int = field(default=2, metadata=_help("Keep only the first N layers of the text encoder."))
    image_height: int = field(default=0, metadata=_help("Resize images to this height (0 = native size)."))
    image_width: int = field(default=0, metadata=_help("Resize images to this width (0 = native size)."))
    max_text_len: int = field(default=64, metadata=_help("Text tokens kept per item (incl. special tokens)."))
    tabular_buckets: int = field(default=16, metadata=_help(
        "Tabular modality: quantile buckets of a numeric field, or categories kept of a categorical one (the "
        "rest share one 'other' bucket); em3/modalities/tabular.py."))
    audio_encoder: str = field(default="scratch", metadata=_help(
        "Audio encoder: 'scratch' (log-mel spectrogram + a small seeded frozen encoder; em3/models/audio_encoder.py)."))
    audio_tokens: int = field(default=16, metadata=_help("Audio modality: time tokens per item's sound."))
    image_top: str = field(default="frozen", metadata=_help(
        "frozen: the image backbone's last feature map is cached; trained: its last block (MobileNetV2's 1x1 "
        "conv + BatchNorm, folded into one per-token layer) is trained by the ranking loss from its pretrained "
        "weights, and the cache holds the block's input (em3/models/image_encoder.py, fold_top)."))
    cache_dir: str = field(default="", metadata=_help("Feature cache directory; empty = <repo>/.cache/features."))

    def __post_init__(self) -> None:
        _positive(self, "text_layers", "max_text_len", "audio_tokens", prefix="encoder")
        _choice(self.image_top, IMAGE_TOPS, "encoder.image_top")
        _check(self.tabular_buckets >= 2, "encoder.tabular_buckets", f"must be >= 2, got {self.tabular_buckets}")
        for n in ("image_height", "image_width"):
            _check(getattr(self, n) >= 0, f"encoder.{n}", f"must be >= 0, got {getattr(self, n)}")
        _check((self.image_height == 0) == (self.image_width == 0), "encoder.image_height",
               "set both image_height and image_width, or neither")


@dataclass(frozen=True)
class FusionConfig:
    mode: str = field(default="selfattn", metadata=_help(
        "selfattn (authors' design: self-attention over [queries; tokens]), blip2 (cross-attention + FFN) "
        "or mean (mean-pool tokens, no queries)."))
    modalities: tuple[str, ...] = field(default=DEFAULT_MODALITIES, metadata=_help(
        f"Modalities fused, of the registry's {', '.join(MODALITIES)} (em3/modalities/); a source without one "
        "is refused by name, an item without one gets masked tokens."))
    num_queries: int = field(default=2, metadata=_help("Learnable query tokens N_q."))
    num_layers: int = field(default=1, metadata=_help("Transformer layers of the Fusion-Q-Former."))
    num_heads: int = field(default=4, metadata=_help("Attention heads; must divide dim."))
    dim: int = field(default=64, metadata=_help("Hidden and content-embedding size D."))
    dropout: float = field(default=0.1, metadata=_help("Dropout inside the Fusion-Q-Former."))

    def __post_init__(self) -> None:
        _choice(self.mode, FUSION_MODES, "model.fusion.mode")
        _check(len(self.modalities) > 0, "model.fusion.modalities", "needs at least one modality")
        for m in self.modalities:
            _choice(m, MODALITIES, "model.fusion.modalities")
        _check(len(set(self.modalities)) == len(self.modalities), "model.fusion.modalities",
               f"a modality is named twice in {list(self.modalities)}")
        _positive(self, "num_queries", "num_layers", "num_heads", "dim", prefix="model.fusion")
        _check(self.dim % self.num_heads == 0, "model.fusion.dim",
               f"D={self.dim} is not divisible by num_heads={self.num_heads}")
        _check(0.0 <= self.dropout < 1.0, "model.fusion.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class HistoryConfig:
    strategy: str = field(default="lora", metadata=_help(
        "How history items are encoded: lora (shared base weights, gradient stopped, LoRA adapters), "
        "shared (fully trainable), frozen (no grad), precomputed (frozen encoder features, no Q-Former)."))
    lora_rank: int = field(default=4, metadata=_help("LoRA rank r."))
    lora_alpha: float = field(default=8.0, metadata=_help("LoRA scaling alpha."))
    lora_dropout: float = field(default=0.0, metadata=_help("Dropout on the LoRA path."))
    lora_targets: tuple[str, ...] = field(default=("q_proj", "k_proj", "v_proj", "out_proj"), metadata=_help(
        "Fusion-Q-Former linear layers that get LoRA adapters (by module name)."))
    dedup: bool = field(default=True, metadata=_help("Encode the unique items of a batch once."))
    cut: str = field(default="last", metadata=_help(
        "Which history items each target sees, of the data.max_history window: last (the cut_k most recent) or "
        "similar (the cut_k whose item-ID embedding is closest to the target's: a retrieval-style cut as in "
        "SIM/ETA; em3/models/history_cut.py). Cut items become padding: never encoded, never attended."))
    cut_k: int = field(default=0, metadata=_help(
        "Items each target keeps with model.history.cut (0 = the whole window; similar needs > 0)."))

    def __post_init__(self) -> None:
        _choice(self.strategy, HISTORY_STRATEGIES, "model.history.strategy")
        _choice(self.cut, HISTORY_CUTS, "model.history.cut")
        _check(self.cut_k >= 0, "model.history.cut_k", f"must be >= 0, got {self.cut_k}")
        _check(self.cut != "similar" or self.cut_k > 0, "model.history.cut_k",
               "model.history.cut = similar needs cut_k > 0 (how many similar items to keep)")
        _positive(self, "lora_rank", "lora_alpha", prefix="model.history")
        _check(0.0 <= self.lora_dropout < 1.0, "model.history.lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        _check(len(self.lora_targets) > 0, "model.history.lora_targets", "needs at least one module name")
        for t in self.lora_targets:
            _choice(t, LORA_TARGETS, "model.history.lora_targets")


@dataclass(frozen=True)
class RankerConfig:
    kind: str = field(default="din", metadata=_help("Ranking model: din or dcnv2."))
    id_dim: int = field(default=64, metadata=_help("Item/user ID embedding size."))
    mlp_hidden: tuple[int, ...] = field(default=(128, 64), metadata=_help("Hidden sizes of the output MLP."))
    attention_hidden: tuple[int, ...] = field(default=(64,), metadata=_help("Hidden sizes of DIN's attention MLP."))
    cross_layers: int = field(default=2, metadata=_help("DCNv2 cross layers."))
    dropout: float = field(default=0.1, metadata=_help("Dropout in the ranker MLPs."))
    user_features: bool = field(default=False, metadata=_help(
        "Feed the user features (data.user_features) to the ranker: one id_dim embedding per field, concatenated "
        "with the user-ID embedding (DIN's output MLP input, DCN-v2's cross and deep input). Off by default: on "
        "MovieLens-100K (every test user is seen in training) it left id_only's val AUC unchanged (0.7895 vs "
        "0.7903, session 5). A dataset without user features builds the model as with False."))

    def __post_init__(self) -> None:
        _choice(self.kind, RANKERS, "model.ranker.kind")
        _positive(self, "id_dim", "cross_layers", prefix="model.ranker")
        for n in ("mlp_hidden", "attention_hidden"):
            _check(all(h > 0 for h in getattr(self, n)), f"model.ranker.{n}", f"sizes must be > 0, got {getattr(self, n)}")
        _check(0.0 <= self.dropout < 1.0, "model.ranker.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class CICConfig:
    weight: float = field(default=1e-3, metadata=_help("Content-ID contrastive loss weight lambda (0 = off)."))
    temperature: float = field(default=0.1, metadata=_help("InfoNCE temperature tau."))
    negatives: str = field(default="in_batch", metadata=_help("in_batch (other targets) or sampled (K from the item table)."))
    num_negatives: int = field(default=16, metadata=_help("K sampled negatives (negatives=sampled)."))

    def __post_init__(self) -> None:
        _check(self.weight >= 0, "model.cic.weight", f"lambda must be >= 0, got {self.weight}")
        _check(self.temperature > 0, "model.cic.temperature", f"must be > 0, got {self.temperature}")
        _choice(self.negatives, CIC_NEGATIVES, "model.cic.negatives")
        _positive(self, "num_negatives", prefix="model.cic")


@dataclass(frozen=True)
class ModelConfig:
    arm: str = field(default="em3", metadata=_help("Named variant (see ARMS); its overrides are applied by with_arm."))
    use_content: bool = field(default=True, metadata=_help("Build a content module at all (False for id_only)."))
    fusion: FusionConfig = field(default_factory=FusionConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    cic: CICConfig = field(default_factory=CICConfig)

    def __post_init__(self) -> None:
        _choice(self.arm, tuple(ARMS), "model.arm")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=10, metadata=_help("Maximum training epochs."))
    batch_size: int = field(default=256, metadata=_help("Training batch size (global, across processes)."))
    eval_batch_size: int = field(default=1024, metadata=_help("Evaluation batch size."))
    lr_content: float = field(default=1e-3, metadata=_help("AdamW learning rate of the content module."))
    lr_ranker: float = field(default=1e-3, metadata=_help("AdamW learning rate of the ranker and ID embeddings."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    patience: int = field(default=2, metadata=_help("Early stop after this many epochs without a better validation AUC."))
    max_steps_per_epoch: int = field(default=0, metadata=_help("Cap on steps per epoch (0 = full epoch)."))
    seed: int = field(default=0, metadata=_help("Seed of initialisation, shuffling and dropout."))
    deterministic: bool = field(default=True, metadata=_help(
        "torch.use_deterministic_algorithms (warn-only): the same config, seed and thread count give the same "
        "run, and a resumed run the metrics of an uninterrupted one. Off, two CPU threads' "
        "accumulation order moves a tiny run's val AUC by up to 6e-4 between identical runs; measured cost on "
        "a MovieLens em3 step: none (docs/RESULTS.md)."))
    device: str = field(default="auto", metadata=_help("auto (CUDA if available), cpu or cuda."))
    bf16: bool = field(default=True, metadata=_help("bf16 autocast on CUDA (ignored on CPU)."))
    log_every: int = field(default=10, metadata=_help("Log step losses every N steps."))
    topk: int = field(default=10, metadata=_help("K of Recall@K / NDCG@K and of logged recommendations."))
    topk_users: int = field(default=0, metadata=_help(
        "Rank the catalogue for this many test users (a fixed seeded sample) in the final top-K evaluation; "
        "0 = every user with a test positive."))
    id_dropout: float = field(default=0.0, metadata=_help(
        "ID dropout (DropoutNet): in training only, each target's item ID is replaced by the unknown ID that cold "
        "items get with this probability (its content stays), so the content path learns to stand in for the ID. "
        "0 = off; evaluation never drops."))
    id_dropout_history: bool = field(default=False, metadata=_help(
        "Also drop history item IDs (not padding) with probability train.id_dropout."))

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "eval_batch_size", "lr_content", "lr_ranker", "log_every", "topk",
                  prefix="train")
        _check(self.topk_users >= 0, "train.topk_users", f"must be >= 0, got {self.topk_users}")
        _check(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.patience >= 0, "train.patience", f"must be >= 0, got {self.patience}")
        _check(self.max_steps_per_epoch >= 0, "train.max_steps_per_epoch", f"must be >= 0, got {self.max_steps_per_epoch}")
        _choice(self.device, DEVICES, "train.device")
        _check(0.0 <= self.id_dropout < 1.0, "train.id_dropout", f"must be in [0, 1), got {self.id_dropout}")


@dataclass(frozen=True)
class SpeedConfig:
    """The speed levers: each a switch, measured on and off by `python -m em3 bench speed` (docs/RESULTS.md).

    The exact ones (same function, fewer operations) are marked so; the others can change results
    and are part of the config hash like any other field.
    """

    compute_dtype: str = field(default="fp32", metadata=_help(
        "Dtype of the frozen token store and its projection to D on the CPU: fp32, bf16 (fast only on a CPU with "
        "bf16 matmuls, AVX512-BF16/AMX; elsewhere torch emulates them, slower than fp32), or auto (bf16 where "
        "the CPU has them, else fp32; em3/models/precision.py). The rest of the model stays fp32. CUDA uses "
        "train.bf16 instead."))
    ranker_dtype: str = field(default="fp32", metadata=_help(
        "Dtype of the ranker's forward (DIN's attention units and MLP, DCN-v2's cross and deep layers) on the "
        "CPU: fp32, bf16 (under torch.autocast; fast only with bf16 matmuls, like compute_dtype) or auto (bf16 "
        "where the CPU has them). Logits and attention come back in float32, so the loss is computed in fp32. "
        "Not exact: it changes results. CUDA uses train.bf16 instead."))
    prenorm_tokens: bool = field(default=True, metadata=_help(
        "LayerNorm the frozen encoder tokens once when the token store is built (no affine; the projection's "
        "weights absorb it) instead of on every step. Same function class and the same model at init."))
    token_pca: int = field(default=0, metadata=_help(
        "Keep only the top-k principal components of each modality's prenormed tokens wider than k (fitted once "
        "on the catalogue's real tokens when the token store is built): the projection to D then reads k "
        "values a token instead of 1,280 (image) / 384 (text). Not exact (a rank-k approximation); 0 = off. "
        "Needs speed.prenorm_tokens."))
    project_once: bool = field(default=True, metadata=_help(
        "Exact. Under lora/frozen history, project an item's tokens to D once per step for both of its roles "
        "(target and history) instead of once per role."))
    queries_only_last_layer: bool = field(default=True, metadata=_help(
        "Exact. In the last selfattn Fusion-Q-Former layer compute only the query rows (the token rows are "
        "discarded after it)."))
    fold_token_proj: bool = field(default=False, metadata=_help(
        "Exact (to float rounding; the same dropout masks). A one-layer selfattn Fusion-Q-Former computing only "
        "its query rows (speed.queries_only_last_layer) over prenormed tokens reads each item's raw tokens "
        "against one vector per (head, query) instead of projecting every token to D first (em3/models/fold.py): "
        "37% fewer FLOPs an em3 MovieLens step, but on a 2-core CPU the step is memory-bound and no faster "
        "(docs/RESULTS.md, Speed, session 12), so off. Elsewhere (more layers, blip2, mean, a trained image top) "
        "it does nothing. Not part of the config hash, like speed.threads."))
    fold_attention: bool = field(default=True, metadata=_help(
        "Exact (to float rounding). Where a few queries attend to many keys (the Fusion-Q-Former's query rows, "
        "BLIP-2's queries over the tokens), fold the key and value projections into the queries "
        "(em3/models/attention_fold.py) instead of projecting every key row and calling the scaled-dot-product "
        "kernel: 0.72x an em3 MovieLens step on 2 CPU cores (docs/RESULTS.md, Speed, session 15). Not part of "
        "the config hash, like speed.threads."))
    shared_token_reads: bool = field(default=True, metadata=_help(
        "Exact (to float rounding). Under lora with speed.project_once and the folded one-layer attention "
        "(speed.fold_attention), the target and history paths attend over the targets' projected tokens with "
        "their score vectors stacked, so each read of those tokens serves both paths (em3/models/shared_reads.py): "
        "0.98x an em3 MovieLens step (docs/RESULTS.md, Speed, session 16). Not part of the config hash."))
    merge_lora_history: bool = field(default=True, metadata=_help(
        "Exact (with model.history.lora_dropout = 0). The lora history path runs each adapted layer as one "
        "matmul with W.detach() + s·BA instead of the base layer plus the adapter's two."))
    din_split_attention: bool = field(default=True, metadata=_help(
        "Exact. DIN's attention unit applies its first layer as (W1+W3)q + (W2-W3)k + W4(q*k) instead of "
        "W[q, k, q-k, q*k], so the target term is computed once per row, not once per history item."))
    din_table_keys: bool = field(default=True, metadata=_help(
        "Exact (to float rounding). DIN's split attention computes the key term (W2-W3)k + b once per row of the "
        "table the history was gathered from (the ID embedding table; the batch's unique history items' "
        "content) and gathers it, instead of once per (row, history item): 0.85x an id_only and 0.93x an em3 "
        "MovieLens step (docs/RESULTS.md, Speed, session 15). Not part of the config hash."))
    din_fused_unit: bool = field(default=True, metadata=_help(
        "Exact (to float rounding; the same dropout masks). DIN's attention unit in fewer passes over its "
        "(B, L, H) tensors: each ReLU + dropout one masked select with the dropout's 1/(1-p) folded into the next "
        "weight (with speed.fast_dropout's masks; torch's dropout keeps the plain layers), and the history's rows "
        "gathered by index_select (a cheaper backward than indexing's): 0.90x an id_only and 0.95x an em3 MovieLens "
        "step (docs/RESULTS.md, Speed, session 16). Not part of the config hash."))
    din_pack_history: bool = field(default=True, metadata=_help(
        "Exact (to float rounding; the same dropout masks). With speed.din_fused_unit and speed.din_split_attention, "
        "DIN's attention unit runs on the real history items alone, not on every (row, slot) of the padded "
        "(B, L) window (about 40% of MovieLens's are padding); the dropout masks are drawn for the whole window, "
        "as unpacked: 0.81x an id_only and 0.95x an em3 MovieLens step (docs/RESULTS.md, Speed, session 16). "
        "Not part of the config hash."))
    din_pair_scores: bool = field(default=True, metadata=_help(
        "Exact (to float rounding). DIN's attention unit reads a (candidate, history item) pair alone, so the "
        "top-K ranking of the catalogue computes each unit's scores once per (item, history item) pair and "
        "gathers them for every user, instead of once per (user, item, history slot): MovieLens's 831 test "
        "users take 2.8M pair evaluations instead of 70M (docs/RESULTS.md, Speed, session 22). Not part of "
        "the config hash."))
    eval_item_cache: bool = field(default=True, metadata=_help(
        "Exact. Evaluation encodes every item once per path (target, history) and runs only the ranker over "
        "the split's rows, instead of re-encoding each batch's items."))
    pool_mean_tokens: bool = field(default=True, metadata=_help(
        "Exact (to float rounding). Under model.fusion.mode = mean with speed.prenorm_tokens, the token store "
        "holds each item's masked mean of its prenormed tokens per modality, computed once: the projection is "
        "linear, so projecting the mean equals averaging the projected tokens, and a step projects one vector "
        "per item and modality instead of every token. Stands down for a modality with a trainable top layer, "
        "and where token_proj has a LoRA adapter with dropout. Not part of the config hash."))
    fast_dropout: bool = field(default=False, metadata=_help(
        "Every dropout draws its mask 3 elements per 64-bit random number (em3/models/dropout.py) instead of "
        "torch's one per element: the same Bernoulli(p) masks in law (p rounded to 1/65536), another random "
        "stream, so results change like another seed."))
    fill_uninitialized: bool = field(default=True, metadata=_help(
        "Exact. Under train.deterministic, let torch fill every new tensor with NaN before its kernel writes it "
        "(torch.utils.deterministic.fill_uninitialized_memory, torch's default): a pass over each large output, "
        "e.g. every step's token gathers. False skips the fill; the kernels overwrite what they return."))
    compile: str = field(default="off", metadata=_help(
        "torch.compile (inductor, dynamic shapes) of the ranker, the Fusion-Q-Former, both, or off. Fused "
        "kernels compute the same function in another order, so results change in the last digits; the first "
        "steps of a process pay the compilation (em3/models/compiled.py)."))
    threads: int = field(default=0, metadata=_help(
        "torch CPU threads for a run (0 = the number of physical cores available to the process)."))
    keep_heap: bool = field(default=True, metadata=_help(
        "Exact. On Linux/glibc, serve large tensors from the heap and keep freed memory (mallopt) instead of "
        "mapping fresh pages for every step's activations; the process keeps its peak memory resident."))

    def __post_init__(self) -> None:
        _choice(self.compute_dtype, COMPUTE_DTYPES, "speed.compute_dtype")
        _choice(self.ranker_dtype, COMPUTE_DTYPES, "speed.ranker_dtype")
        _choice(self.compile, COMPILE_TARGETS, "speed.compile")
        _check(self.token_pca >= 0, "speed.token_pca", f"must be >= 0 (0 = off), got {self.token_pca}")
        _check(self.token_pca == 0 or self.prenorm_tokens, "speed.token_pca",
               f"= {self.token_pca} needs speed.prenorm_tokens = true (the components are fitted to prenormed tokens)")
        _check(self.threads >= 0, "speed.threads", f"must be >= 0, got {self.threads}")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    version: int = field(default=CONFIG_VERSION, metadata=_help("Config schema version."))


# ---- arms: each a set of overrides on top of the base config ------------------------------

ARMS: dict[str, dict[str, Any]] = {
    "id_only": {"model.use_content": False, "model.cic.weight": 0.0},
    "precomputed": {"model.fusion.mode": "mean", "model.history.strategy": "precomputed", "model.cic.weight": 0.0},
    "em3": {},
    "em3_no_cic": {"model.cic.weight": 0.0},
    "em3_frozen_history": {"model.history.strategy": "frozen"},
    "em3_shared_history": {"model.history.strategy": "shared"},
    "em3_mean_fusion": {"model.fusion.mode": "mean"},
    "em3_image_only": {"model.fusion.modalities": ("image",)},
    "em3_text_only": {"model.fusion.modalities": ("text",)},
}

ARM_HELP: dict[str, str] = {
    "id_only": "Ranker on IDs alone: no content.",
    "precomputed": "Ranker + frozen, mean-pooled encoder features (the pre-extracted-features baseline).",
    "em3": "Fusion-Q-Former trained end to end + LoRA history + CIC.",
    "em3_no_cic": "EM3 without the Content-ID contrastive loss.",
    "em3_frozen_history": "EM3 with history items encoded under no-grad, no adapters.",
    "em3_shared_history": "EM3 with history items through the fully trainable Fusion-Q-Former.",
    "em3_mean_fusion": "EM3 with mean-pooled tokens instead of learnable queries.",
    "em3_image_only": "EM3 fusing the image tokens alone.",
    "em3_text_only": "EM3 fusing the text tokens alone.",
}


# ---- serialisation --------------------------------------------------------------------------

def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists, JSON-ready)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def coerce_value(value: Any, typ: Any, name: str) -> Any:
    """Convert a JSON/YAML/CLI value to the field's declared type, or raise naming the field."""
    origin = getattr(typ, "__origin__", None)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        inner = typ.__args__[0]
        return tuple(coerce_value(v, inner, name) for v in value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        try:
            out = int(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
        if not -2**63 <= out < 2**63:   # seeds and sizes go to numpy/torch as int64
            raise ConfigError(f"{name}: expected an integer within int64, got {out}")
        return out
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if out != out or out in (float("inf"), float("-inf")):
            raise ConfigError(f"{name}: expected a finite number, got {out}")
        return out
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{prefix}{unknown[0]}"
        close = difflib.get_close_matches(str(unknown[0]), sorted(names), n=3)
        hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
        raise ConfigError(f"{key}: unknown config key{hint}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        typ = hints[f.name]
        if is_dataclass(typ):
            kwargs[f.name] = _build(typ, data[f.name], f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = coerce_value(data[f.name], typ, f"{prefix}{f.name}")
    return cls(**kwargs)


def from_dict(data: Mapping[str, Any]) -> Config:
    """Strict inverse of to_dict: unknown keys and wrong types raise ConfigError naming the field."""
    return _build(Config, data, "")


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """{'model.fusion.dim': 64, ...} for MLflow params and --set keys."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = ",".join(map(str, value)) if isinstance(value, tuple) else value
    return out


def field_help(key: str) -> str:
    """Help text of a dotted key, e.g. 'model.fusion.num_queries'."""
    cls: Any = Config
    *path, last = key.split(".")
    for p in path:
        cls = get_type_hints(cls)[p]
    return next(f.metadata.get("help", "") for f in fields(cls) if f.name == last)


def with_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Return cfg with dotted keys replaced; unknown keys raise with close matches."""
    known = flatten(cfg)
    data = to_dict(cfg)
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"{key}: unknown config key{hint}")
        node = data
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = list(value) if isinstance(value, tuple) else value
    return from_dict(data)


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Parse CLI `--set key=value` strings into a dict (values stay strings; from_dict coerces)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def with_arm(cfg: Config, arm: str) -> Config:
    """Apply a named arm's overrides (and record the arm name)."""
    if arm not in ARMS:
        close = difflib.get_close_matches(arm, sorted(ARMS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"model.arm: unknown arm {arm!r}{hint}")
    return with_overrides(cfg, {"model.arm": arm, **ARMS[arm]})


# ---- presets --------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    # Seconds on a laptop CPU: the test suite's preset.
    "tiny": {
        "data.source": "synthetic", "data.preset": "tiny", "data.max_history": 10,
        "encoder.image_encoder": "scratch", "encoder.text_encoder": "scratch", "encoder.max_text_len": 16,
        "model.fusion.dim": 32, "model.ranker.id_dim": 32, "model.ranker.mlp_hidden": (32,),
        "model.ranker.attention_hidden": (16,), "train.epochs": 2, "train.batch_size": 128,
    },
    # The dashboard's default: a few thousand items, ~1k users, ~100k impressions.
    "demo": {
        "data.source": "synthetic", "data.preset": "demo", "data.max_history": 20,
        # a synthetic text is at most 12 tokens (synthetic/2), so 16 wastes nothing and truncates nothing
        "encoder.image_encoder": "scratch", "encoder.text_encoder": "scratch", "encoder.max_text_len": 16,
        # a cold validation split, so content settings can be chosen on cold items without test
        "data.val_cold_item_frac": 0.1,
        # model sizes chosen on val_cold AUC over {these, the library defaults D 64 / id 64 / MLP 128,64 /
        # attention 64}: every content arm chose these (docs/RESULTS.md, "Synthetic sanity check")
        "model.fusion.dim": 32, "model.ranker.id_dim": 32, "model.ranker.mlp_hidden": (32,),
        "model.ranker.attention_hidden": (16,),
        # CIC λ 0.1, not the authors' 1e-3: chosen on val_cold AUC over {1e-3, 0.1, 1} (seeds 0, 1: 0.690 /
        # 0.743 -> 0.781 / 0.790) at the same warm val AUC, and a shared space that aligns (matched cosine
        # 0.96 vs 0.00 random, content->ID top-1 91-94%; at 1e-3: 0.53 vs 0.49, 0.1%); docs/RESULTS.md,
        # "Dashboard: the first ten minutes"
        "model.cic.weight": 0.1,
        "train.epochs": 5, "train.batch_size": 512,
    },
    # Between the two: big enough that content visibly helps on cold items (tests/test_synthetic_signal.py).
    "small": {
        "data.source": "synthetic", "data.preset": "small", "data.max_history": 10,
        "encoder.image_encoder": "scratch", "encoder.text_encoder": "scratch", "encoder.max_text_len": 16,
        "model.fusion.dim": 32, "model.ranker.id_dim": 32, "model.ranker.mlp_hidden": (32,),
        "model.ranker.attention_hidden": (16,), "train.epochs": 6, "train.batch_size": 512,   # demo's batch
    },
    # The fourth modality (issue 15): small's size, items also carry audio-only attributes, heard in a short
    # generated sound (em3/data/synthetic_audio.py); the em3 arm fuses all three.
    "audio": {
        "data.source": "synthetic", "data.preset": "audio", "data.max_history": 10,
        "encoder.image_encoder": "scratch", "encoder.text_encoder": "scratch", "encoder.max_text_len": 16,
        "model.fusion.modalities": ("image", "text", "audio"),
        "model.fusion.dim": 32, "model.ranker.id_dim": 32, "model.ranker.mlp_hidden": (32,),
        "model.ranker.attention_hidden": (16,), "train.epochs": 6, "train.batch_size": 512,
    },
    # Long behaviour sequences (issue 15): users with 1,000+ positives; L is set per bench row.
    "long": {
        "data.source": "synthetic", "data.preset": "long", "data.max_history": 1000,
        "encoder.image_encoder": "scratch", "encoder.text_encoder": "scratch", "encoder.max_text_len": 16,
        "model.fusion.dim": 32, "model.ranker.id_dim": 32, "model.ranker.mlp_hidden": (32,),
        "model.ranker.attention_hidden": (16,), "train.epochs": 2, "train.batch_size": 256,
    },
    # Real data: MovieLens-100K with posters and the shared pretrained encoders.
    "movielens": {
        "data.source": "movielens-100k", "data.max_history": 50,
        # batch 1024 with 2x the default learning rates: an em3 epoch in ~20 s on 2 cores, against
        # ~45 s at batch 256 fp32 lr 1e-3, at the same val AUC after early stopping (0.7889 vs 0.7881, one
        # seed; id_only 0.7904); docs/RESULTS.md, "Speed", session 5. bf16 only where the CPU has bf16
        # matmuls: emulated, it is 33% slower than fp32 (session 6, an AVX-512 Xeon without AVX512-BF16)
        "train.epochs": 10, "train.batch_size": 1024, "speed.compute_dtype": "auto",
        "train.lr_ranker": 2e-3, "train.lr_content": 2e-3,
        # cheaper dropout masks and no NaN pre-fill of new tensors: ~5% each off the em3 epoch on the CPU
        # (docs/RESULTS.md, "Speed", session 8); the fill is exact, the masks are another random stream
        "speed.fast_dropout": True, "speed.fill_uninitialized": False,
        # issue 13's levers, each chosen on validation with em3/DIN, seed 0 (docs/RESULTS.md, "Toward a standard
        # DIN", session 8): all 6 MiniLM layers (val AUC 0.7921 vs 0.7888 with 2), posters at their native size
        # (224x160 input: 0.7902), user features on, ID dropout p = 0.2 (val_cold AUC 0.674 vs 0.655 at p = 0,
        # 0.671 at 0.35, 0.663 at 0.5)
        "encoder.text_layers": 6, "model.ranker.user_features": True, "train.id_dropout": 0.2,
    },
}


def preset(name: str, arm: str = "em3") -> Config:
    """A named preset with an arm applied."""
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return with_arm(with_overrides(Config(), PRESETS[name]), arm)

