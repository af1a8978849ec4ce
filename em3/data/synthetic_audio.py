"""How a synthetic item's audio-only attributes (pitch, rhythm) become a short mono sound.

Pitch is the tone's fundamental (half an octave between values, so a log-mel front end puts them in
different bins); rhythm is how many tones sound and for how long (the values differ both in onset
count and in the share of the clip that sounds, so a set of time tokens tells them apart without
their order). Neither is drawn into the image nor written into the text. Everything else is seeded
nuisance: a small detune, loudness, start offset, tone-length stretch, phase and a little noise.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

SAMPLE_RATE = 16000            # Hz, of every waveform a loader returns
DURATION = 1.0                 # seconds
NUM_SAMPLES = int(SAMPLE_RATE * DURATION)
# Bump when the rendering changes: part of the audio preset's fingerprint.
AUDIO_VERSION = "synthetic-audio/1"

AUDIO_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "pitch": ("A3", "D#4", "A4", "D#5", "A5"),
    "rhythm": ("drone", "pulse", "triplet", "patter"),
}
PITCH_HZ = {"A3": 220.0, "D#4": 311.13, "A4": 440.0, "D#5": 622.25, "A5": 880.0}
# rhythm -> (tones, seconds each); tone k starts at offset + k * SPAN / tones. Sounding share:
# 0.80, 0.56, 0.36, 0.21 of the clip.
RHYTHMS = {"drone": (1, 0.80), "pulse": (2, 0.28), "triplet": (3, 0.12), "patter": (6, 0.035)}
SPAN = 0.9                     # seconds over which the onsets are spread
RAMP = 0.005                   # seconds of linear attack and release (no clicks)
HARMONIC = 0.3                 # amplitude of the 2nd harmonic, relative to the fundamental


def render_audio(pitch: str, rhythm: str, *, phase: float = 0.0, detune: float = 0.0, gain: float = 0.7,
                 offset: float = 0.0, stretch: float = 1.0, noise: float = 0.0, noise_seed: int = 0) -> np.ndarray:
    """The item's sound: (NUM_SAMPLES,) float32 in [-1, 1], the same for the same arguments.

    detune: relative frequency shift (0.02 = 2 %); gain: peak tone amplitude; offset: seconds before the
    first onset (keep <= 0.08); stretch: tone-length factor (keep in 0.9 .. 1.1); noise: std of white noise.
    """
    if pitch not in PITCH_HZ:
        raise ValueError(f"render_audio: pitch {pitch!r} is unknown; expected one of {', '.join(PITCH_HZ)}")
    if rhythm not in RHYTHMS:
        raise ValueError(f"render_audio: rhythm {rhythm!r} is unknown; expected one of {', '.join(RHYTHMS)}")
    t = np.arange(NUM_SAMPLES) / SAMPLE_RATE                                   # (S,) seconds
    f = PITCH_HZ[pitch] * (1.0 + detune)
    tone = np.sin(2 * math.pi * f * t + phase) + HARMONIC * np.sin(4 * math.pi * f * t + 2 * phase)
    tones, length = RHYTHMS[rhythm]
    length *= stretch
    envelope = np.zeros(NUM_SAMPLES)
    for k in range(tones):
        start = offset + k * SPAN / tones
        # trapezoid: 0 before start, ramps up over RAMP, 1, ramps down over RAMP to 0 at start + length
        rise = np.clip((t - start) / RAMP, 0.0, 1.0)
        fall = np.clip((start + length - t) / RAMP, 0.0, 1.0)
        envelope = np.maximum(envelope, np.minimum(rise, fall))
    wave = gain / (1.0 + HARMONIC) * envelope * tone
    if noise > 0:
        wave = wave + noise * np.random.default_rng(int(noise_seed)).normal(size=NUM_SAMPLES)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def draw_audio_nuisance(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Seeded nuisance for n sounds: the keyword arguments of `render_audio`, one array each."""
    return {
        "phase": rng.uniform(0.0, 2 * math.pi, size=n),
        "detune": rng.uniform(-0.02, 0.02, size=n),
        "gain": rng.uniform(0.4, 0.9, size=n),
        "offset": rng.uniform(0.0, 0.08, size=n),
        "stretch": rng.uniform(0.9, 1.1, size=n),
        "noise": rng.uniform(0.002, 0.02, size=n),
        "noise_seed": rng.integers(0, 2**31 - 1, size=n),
    }


class SyntheticAudio:
    """`loaders["audio"]` of the synthetic audio preset: renders an item's sound on demand, deterministically."""

    def __init__(self, items: pd.DataFrame, nuisance: dict[str, np.ndarray]) -> None:
        self._row = {int(i): k for k, i in enumerate(items["item_id"].to_numpy())}
        self._attrs = {a: items[a].to_numpy() for a in AUDIO_ATTRIBUTES}
        self._n = nuisance
        self.missing: set[int] = set()
        self.unreadable: dict[int, str] = {}

    def __call__(self, item_id: int) -> np.ndarray | None:
        k = self._row.get(int(item_id))
        if k is None:
            self.missing.add(int(item_id))
            return None
        n = self._n
        return render_audio(str(self._attrs["pitch"][k]), str(self._attrs["rhythm"][k]),
                            phase=float(n["phase"][k]), detune=float(n["detune"][k]), gain=float(n["gain"][k]),
                            offset=float(n["offset"][k]), stretch=float(n["stretch"][k]),
                            noise=float(n["noise"][k]), noise_seed=int(n["noise_seed"][k]))
