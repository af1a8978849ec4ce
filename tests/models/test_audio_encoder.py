"""The scratch audio encoder: shapes, masks, the None case, determinism; pitch and rhythm readable from its tokens."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from em3.config import ConfigError
from em3.data.synthetic_audio import AUDIO_ATTRIBUTES, SAMPLE_RATE, draw_audio_nuisance, render_audio
from em3.models.audio_encoder import SCRATCH, audio_encoder_identity, load_audio_encoder

TA = 8


@pytest.fixture(scope="module")
def encoder():
    return load_audio_encoder(SCRATCH, num_tokens=TA)


@pytest.fixture(scope="module")
def clips():
    """180 seeded sounds with nuisance: (pitch labels, rhythm labels, tokens (N, Ta, C))."""
    rng = np.random.default_rng(0)
    n = 180
    pitch = rng.choice(AUDIO_ATTRIBUTES["pitch"], size=n)
    rhythm = rng.choice(AUDIO_ATTRIBUTES["rhythm"], size=n)
    nuisance = draw_audio_nuisance(rng, n)
    waves = [render_audio(pitch[k], rhythm[k], **{key: v[k].item() for key, v in nuisance.items()}) for k in range(n)]
    tokens, mask = load_audio_encoder(SCRATCH, num_tokens=TA).encode(waves, SAMPLE_RATE)
    assert bool(mask.all())
    return pitch, rhythm, tokens.numpy()


def _probe(x: np.ndarray, y: np.ndarray, train: int) -> float:
    """Held-out accuracy of a linear (logistic) probe on standardised features."""
    x = StandardScaler().fit(x[:train]).transform(x)
    return LogisticRegression(max_iter=3000).fit(x[:train], y[:train]).score(x[train:], y[train:])


def test_shapes_masks_and_none(encoder):
    waves = [render_audio("A4", "drone"), None, render_audio("A3", "patter")[:8000], np.zeros(0, np.float32)]
    tokens, mask = encoder.encode(waves, SAMPLE_RATE)
    assert tokens.shape == (4, TA, encoder.dim) and tokens.dtype == torch.float32 and encoder.dim == 64
    assert mask.dtype == torch.bool and mask.tolist() == [[True] * TA, [False] * TA, [True] * TA, [False] * TA]
    assert not tokens[1].any() and not tokens[3].any() and torch.isfinite(tokens).all()
    assert encoder.encode([], SAMPLE_RATE)[0].shape == (0, TA, 64)
    again, _ = load_audio_encoder(SCRATCH, num_tokens=TA).encode(waves, SAMPLE_RATE)
    assert torch.equal(tokens, again)                       # seeded: the same in every process
    assert all(not p.requires_grad for p in encoder.model.parameters()) and not encoder.model.training


def test_other_sample_rate_is_resampled(encoder):
    wave = render_audio("D#5", "pulse")
    native, _ = encoder.encode([wave], SAMPLE_RATE)
    half, _ = encoder.encode([wave[::2].copy()], SAMPLE_RATE // 2)
    assert torch.nn.functional.cosine_similarity(native.flatten(), half.flatten(), dim=0) > 0.95


def test_bad_inputs_are_refused(encoder):
    with pytest.raises(ValueError, match=r"wave 0 has shape \(2, 10\)"):
        encoder.encode([np.zeros((2, 10), np.float32)], SAMPLE_RATE)
    with pytest.raises(ValueError, match="sample_rate must be positive"):
        encoder.encode([render_audio("A4", "drone")], 0)
    with pytest.raises(ConfigError, match=r"encoder\.audio_encoder: got 'wav2vec'"):
        load_audio_encoder("wav2vec", num_tokens=4)
    with pytest.raises(ValueError, match=r"encoder\.audio_encoder: got 'x'"):
        audio_encoder_identity("x")


def test_identity_names_the_recipe():
    ident = audio_encoder_identity(SCRATCH)
    assert ident.startswith("scratch|audio-scratch/") and "mels=40" in ident and "dim=64" in ident


def test_pitch_and_rhythm_readable_from_the_mean_token(clips):
    pitch, rhythm, tokens = clips
    mean = tokens.mean(axis=1)                              # (N, C): what a mean fusion sees
    assert _probe(mean, pitch, 120) >= 0.95                 # chance 0.2
    assert _probe(mean, rhythm, 120) >= 0.8                 # chance 0.25


def test_pitch_readable_from_one_token(clips):
    pitch, rhythm, tokens = clips
    drone = rhythm == "drone"                               # sounds 0.08 .. 0.88 s: the middle token is a tone
    x, y = tokens[drone, TA // 2], pitch[drone]
    assert _probe(x, y, len(y) * 2 // 3) >= 0.9
