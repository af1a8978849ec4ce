"""The text modality: the frozen text encoder's token states of the item's title and description."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from em3.errors import CacheError
from em3.modalities.base import Encoded, Modality


def item_texts(raw: Any, item_ids: np.ndarray) -> list[str]:
    """The text each item's tokens come from (title + description), in `item_ids` order."""
    from em3.models.encoders import item_text

    items = raw.items.drop_duplicates("item_id").set_index("item_id")
    missing = item_ids[~np.isin(item_ids, items.index.to_numpy())]
    if len(missing):
        raise CacheError(f"{raw.name}: item_ids {missing[:5].tolist()} of the sample set are not in the item table")
    rows = items.loc[item_ids]
    return [item_text(t, d) for t, d in zip(rows["title"], rows["text"])]


def _key_inputs(raw: Any, samples: Any, enc: Any) -> dict[str, Any]:
    from em3.models.encoders import text_encoder_identity
    return {"text_encoder": text_encoder_identity(enc.text_encoder), "text_layers": enc.text_layers,
            "max_text_len": enc.max_text_len}


@dataclass
class _TextBatches:
    model: Any
    texts: dict[int, str]
    max_len: int
    source: str
    shape: tuple[int, int]
    grid: None = None

    def encode(self, item_ids: np.ndarray) -> Encoded:
        states, mask, words = self.model.encode([self.texts[int(i)] for i in item_ids], max_len=self.max_len)
        return Encoded(tokens=states.numpy(), mask=mask.numpy(), labels=words)   # (n, Tt, Ct), (n, Tt)


def _open(raw: Any, samples: Any, enc: Any) -> _TextBatches:
    from em3.models.encoders import load_text_encoder
    item_ids = np.asarray(samples.item_ids)
    texts = item_texts(raw, item_ids)
    model = load_text_encoder(enc.text_encoder, enc.text_layers, corpus=texts)
    return _TextBatches(model=model, texts=dict(zip(item_ids.tolist(), texts)), max_len=enc.max_text_len,
                        source=model.source, shape=(enc.max_text_len, model.dim))


MODALITY = Modality(name="text", view="tokens", key_inputs=_key_inputs, open=_open,
                    describe="the item's title and description: the frozen text encoder's token states")
