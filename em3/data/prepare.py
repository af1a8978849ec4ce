"""A config's data, ready for a model: the raw dataset, its samples and (when the arm reads content) item tokens.

The one preamble shared by every in-process trainer outside `em3.training.run` (which reports
progress between the steps): the offline bench worker, the step probe and the synthetic scripts.
"""
from __future__ import annotations

from dataclasses import dataclass

from em3.config import Config
from em3.data.cache import ItemTokens, build_item_tokens
from em3.data.load import load_dataset
from em3.data.samples import build_samples
from em3.data.schema import RawDataset, SampleSet


@dataclass(frozen=True)
class Prepared:
    raw: RawDataset
    samples: SampleSet
    tokens: ItemTokens | None        # None when cfg's arm uses no content (id_only)


def prepare(cfg: Config, *, progress: bool = False) -> Prepared:
    """Load cfg.data, build its samples and, if cfg.model.use_content, its item tokens (from the feature cache)."""
    raw = load_dataset(cfg.data)
    samples = build_samples(raw, cfg.data)
    tokens = build_item_tokens(raw, samples, cfg.encoder, modalities=cfg.model.fusion.modalities,
                               progress=progress) if cfg.model.use_content else None
    return Prepared(raw=raw, samples=samples, tokens=tokens)
