"""The frozen text encoder: a transformers language model (first N layers) whose token states are tokens.

Shape letters: N texts, Tt = max_text_len tokens, C hidden size.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from em3.config import ConfigError
from em3.models.image_encoder import SCRATCH, local_model_identity, quiet_transformers
from em3.paths import resolve_text_encoder

# Bump when the scratch architecture, tokenizer or initialisation changes: part of the cache key.
SCRATCH_TEXT_VERSION = 2
SCRATCH_TEXT_SEED = 4321
# Hidden 128: random word embeddings wide enough to stay nearly orthogonal, so a token's state (its
# embedding plus small random-attention mixing) still says which word it is. At hidden 64 linear
# probes on the synthetic genre/mood words reached 0.58/0.75; at 128, 0.89/0.97 (docs/notes/synthetic_signal.md).
SCRATCH_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 256, "max_position_embeddings": 512,
}
SCRATCH_MAX_VOCAB = 8192
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


@dataclass
class TextEncoder:
    """A frozen text backbone (always eval, no grad) and its tokenizer."""

    name: str          # as configured
    source: str        # what was loaded
    model: nn.Module
    tokenizer: Any     # a transformers PreTrainedTokenizerFast
    layers: int        # transformer layers kept

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], *, max_len: int) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
        """Token states (N, Tt, C) float32, mask (N, Tt) bool and each text's real token strings."""
        batch = self.tokenizer(list(texts), max_length=max_len, truncation=True, padding="max_length",
                               return_tensors="pt")
        self.model.eval()
        states = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].bool()                     # (N, Tt)
        states = states.float() * mask.unsqueeze(-1)              # padding positions -> exact zeros
        words = [self.tokenizer.convert_ids_to_tokens(ids[m].tolist()) for ids, m in zip(batch["input_ids"], mask)]
        return states, mask, words


def scratch_tokenizer(corpus: Iterable[str]) -> Any:
    """A word-level tokenizer over the corpus's words (lower-cased, punctuation split), built in code.

    Vocabulary = the special tokens, then words by falling count, ties alphabetical: deterministic.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in corpus:
        counts.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text or "")))
    words = sorted(counts, key=lambda w: (-counts[w], w))[: SCRATCH_MAX_VOCAB - len(SPECIAL_TOKENS)]
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")


def build_scratch_text_model(*, vocab_size: int, layers: int) -> nn.Module:
    """A small random BERT (hidden 128), identical in every process for the same vocabulary size and depth."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=vocab_size, num_hidden_layers=layers, pad_token_id=0, **SCRATCH_TEXT_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SCRATCH_TEXT_SEED)
        model = BertModel(config, add_pooling_layer=False)
    return _freeze(model)


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def load_text_encoder(name: str, layers: int, *, corpus: Iterable[str] | None = None) -> TextEncoder:
    """The configured text encoder cut to its first `layers` layers; 'scratch' builds its vocabulary from `corpus`."""
    if name == SCRATCH:
        if corpus is None:
            raise ValueError("load_text_encoder('scratch') needs the corpus its vocabulary is built from")
        tokenizer = scratch_tokenizer(corpus)
        model = build_scratch_text_model(vocab_size=len(tokenizer), layers=layers)
        return TextEncoder(name=name, source=SCRATCH, model=model, tokenizer=tokenizer, layers=layers)
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    source = resolve_text_encoder(name)
    try:
        config = AutoConfig.from_pretrained(source)
        depth = int(getattr(config, "num_hidden_layers", layers))
        if layers > depth:
            raise ConfigError(f"encoder.text_layers: {name!r} has {depth} layers, cannot keep {layers}")
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModel.from_pretrained(source, num_hidden_layers=layers)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"encoder.text_encoder: cannot load {name!r} from {source!r} ({exc}); set "
                          "$EM3_TEXT_ENCODER to a local copy, or use 'scratch'") from exc
    return TextEncoder(name=name, source=source, model=_freeze(model), tokenizer=tokenizer, layers=layers)


def text_encoder_identity(name: str) -> dict[str, Any]:
    """What the cache key records of a text encoder, without loading it (the layer count is keyed apart)."""
    if name == SCRATCH:
        return {"name": SCRATCH, "version": SCRATCH_TEXT_VERSION, "seed": SCRATCH_TEXT_SEED,
                "config": SCRATCH_TEXT_CONFIG, "max_vocab": SCRATCH_MAX_VOCAB}
    return {"name": name, **local_model_identity(resolve_text_encoder(name))}


def item_text(title: Any, text: Any) -> str:
    """The string an item's text tokens come from: title, then description (once if it already starts with it)."""
    title = title.strip() if isinstance(title, str) else ""
    text = text.strip() if isinstance(text, str) else ""
    if not title or text.lower().startswith(title.lower()):
        return text
    return f"{title}. {text}" if text else title
