"""The audio modality: an item's sound as a log-mel spectrogram cut into time tokens by a small frozen encoder.

The source gives each item's waveform through `RawDataset.loaders["audio"]` (item_id -> mono float32 at
em3.data.synthetic_audio.SAMPLE_RATE, or None: a masked row). The synthetic `audio` preset renders tones
whose pitch and rhythm carry attributes seen in neither the image nor the text; a files dataset reads
the WAV file its `audio_path` column names (em3/data/files.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from em3.modalities.base import Encoded, Modality

log = logging.getLogger(__name__)


def _key_inputs(raw: Any, samples: Any, enc: Any) -> dict[str, Any]:
    from em3.models.audio_encoder import audio_encoder_identity
    return {"audio_encoder": audio_encoder_identity(enc.audio_encoder), "audio_tokens": enc.audio_tokens}


def _read(raw: Any, load: Callable[[int], Any], item_id: int) -> np.ndarray | None:
    try:
        wave = load(int(item_id))
    except Exception as exc:   # a broken file must mask one item, not stop the cache build
        log.warning("%s: audio of item_id %s is unreadable (%s); masked", raw.name, item_id, exc)
        return None
    return None if wave is None else np.asarray(wave, dtype=np.float32)


@dataclass
class _AudioBatches:
    raw: Any
    model: Any
    load: Callable[[int], Any]
    sample_rate: int
    source: str
    shape: tuple[int, int]
    grid: None = None

    def encode(self, item_ids: np.ndarray) -> Encoded:
        waves = [_read(self.raw, self.load, i) for i in item_ids]
        tokens, mask = self.model.encode(waves, self.sample_rate)          # (n, Ta, Ca), (n, Ta)
        t = self.shape[0]
        spans = [f"{k}/{t}" for k in range(t)]                             # the token's share of the clip
        return Encoded(tokens=tokens.numpy(), mask=mask.numpy(),
                       labels=[spans if w is not None else [] for w in waves])


def _open(raw: Any, samples: Any, enc: Any) -> _AudioBatches:
    from em3.data.synthetic_audio import SAMPLE_RATE
    from em3.models.audio_encoder import load_audio_encoder
    model = load_audio_encoder(enc.audio_encoder, num_tokens=enc.audio_tokens)
    return _AudioBatches(raw=raw, model=model, load=raw.loaders["audio"], sample_rate=SAMPLE_RATE,
                         source=model.source, shape=(enc.audio_tokens, model.dim))


MODALITY = Modality(name="audio", view="bars", key_inputs=_key_inputs, open=_open,
                    available=lambda raw: "audio" in raw.loaders,
                    describe="the item's sound: log-mel time tokens through a small frozen encoder")
