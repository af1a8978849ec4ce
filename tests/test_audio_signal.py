"""Issue 15's criterion for a fourth modality: on the synthetic `audio` preset (items carry attributes heard
only in their sound, beside the ones seen only in the picture or read only in the words), EM3 fusing image,
text and audio through the modality registry beats every two-modality arm on cold items.

The library's own path, as tests/test_synthetic_signal.py: prepare (generate, build_samples,
build_item_tokens for the three modalities: the seeded scratch image/text encoders and the log-mel +
scratch audio encoder, none of which read the attributes) -> build_model -> fit -> evaluate_splits,
with the preset's settings for every arm; an arm differs only in model.fusion.modalities.
"""
from __future__ import annotations

import pytest

from em3.config import preset, with_overrides
from em3.data.prepare import prepare
from tests.cold_auc import test_cold_auc

FUSED = {"image+text+audio": ("image", "text", "audio"), "image+text": ("image", "text"),
         "image+audio": ("image", "audio"), "text+audio": ("text", "audio")}
MODEL_SEED = 0
MARGIN = 0.01               # the three-modality arm over each two-modality arm (measured: see RESULTS)


@pytest.fixture(scope="module")
def audio():
    data = prepare(preset("audio"))          # the three modalities' item tokens are built
    assert data.tokens.names == ("image", "text", "audio")
    return data.samples, data.tokens


def _test_cold_auc(audio, modalities: tuple[str, ...]) -> float:
    samples, tokens = audio
    cfg = with_overrides(preset("audio"), {"train.seed": MODEL_SEED, "model.fusion.modalities": modalities})
    return test_cold_auc(cfg, samples, tokens)


@pytest.mark.slow
def test_fusing_the_audio_beats_every_two_modality_arm_on_cold_items(audio):
    auc = {name: _test_cold_auc(audio, mods) for name, mods in FUSED.items()}
    print("test_cold AUC", {k: round(v, 4) for k, v in auc.items()})
    for name in ("image+text", "image+audio", "text+audio"):
        assert auc["image+text+audio"] > auc[name] + MARGIN, auc
