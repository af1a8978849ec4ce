"""The frozen audio encoder: a log-mel spectrogram pooled into equal time tokens by a small seeded conv net.

Shape letters: N waves, M mel bins, F spectrogram frames, Ta = num_tokens time tokens, C channels.

Front end (transformers.audio_utils): Hann window of N_FFT samples, hop HOP, power spectrum, N_MELS
Slaney mel filters, dB clipped DB_RANGE below the clip's loudest bin, rescaled to [-1, 1]: the clip's
loudness does not matter, and a quiet noise floor clips to -1 (silence reads the same in every clip).
A wave at another sample rate is resampled linearly (em3.data.wav.resample) to SAMPLE_RATE first:
enough for pitch and rhythm, not a high-fidelity resampler.

Encoder ("scratch"): one random Conv1d over frames (the mel bins as channels, kernel KERNEL), GELU,
then each of Ta equal spans of frames mean-pooled into a token. Random features of the local spectrum
keep it linearly readable (a token's pitch, and its frames' onsets and share of sound).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from em3.config import ConfigError
from em3.data.synthetic_audio import SAMPLE_RATE
from em3.data.wav import resample

SCRATCH = "scratch"
# Bump when the front end, the architecture or its initialisation changes: part of the cache key.
AUDIO_RECIPE = "audio-scratch/1"
SCRATCH_AUDIO_SEED = 4321
N_FFT = 400                    # 25 ms at 16 kHz
HOP = 160                      # 10 ms
N_MELS = 40
DB_RANGE = 40.0                # 80 let the per-clip noise floor blur how much of the clip sounds
KERNEL = 5                     # frames each conv output sees (50 ms)
SCRATCH_AUDIO_DIM = 64         # C


@lru_cache(maxsize=1)
def _window_and_filters() -> tuple[np.ndarray, np.ndarray]:
    """The Hann window (N_FFT,) and the mel filter bank (N_FFT // 2 + 1, M)."""
    from transformers.audio_utils import mel_filter_bank, window_function

    mel = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=N_MELS, min_frequency=0.0,
                          max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    return window_function(N_FFT, "hann"), mel


def log_mel(wave: np.ndarray) -> np.ndarray:
    """One mono wave at SAMPLE_RATE -> (M, F) float32 log-mel in [-1, 1] (1 = the clip's loudest bin)."""
    from transformers.audio_utils import spectrogram

    if len(wave) < N_FFT:   # the centred frames reflect-pad N_FFT // 2 samples: pad a very short clip
        wave = np.pad(wave, (0, N_FFT - len(wave)))
    window, mel = _window_and_filters()
    db = spectrogram(wave.astype(np.float64), window, frame_length=N_FFT, hop_length=HOP, power=2.0,
                     mel_filters=mel, log_mel="dB", db_range=DB_RANGE)     # (M, F), max - DB_RANGE .. max
    return ((db - db.max()) / (DB_RANGE / 2) + 1.0).astype(np.float32)


def build_scratch_audio_model() -> nn.Module:
    """Conv1d(M -> C, KERNEL) + GELU, Kaiming-initialised, identical in every process (fixed seed, scoped RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SCRATCH_AUDIO_SEED)
        model = nn.Sequential(nn.Conv1d(N_MELS, SCRATCH_AUDIO_DIM, KERNEL, padding=KERNEL // 2), nn.GELU())
        nn.init.kaiming_normal_(model[0].weight, mode="fan_in", nonlinearity="relu")
        nn.init.normal_(model[0].bias, std=0.5)
    model.eval()
    model.requires_grad_(False)
    return model


@dataclass(frozen=True)
class AudioEncoder:
    """A frozen front end + encoder (always eval, no grad): waves -> Ta time tokens of C channels each."""

    name: str                  # as configured ("scratch")
    source: str                # what was built
    model: nn.Module
    num_tokens: int            # Ta

    @property
    def dim(self) -> int:
        """C, the channels of a token."""
        return SCRATCH_AUDIO_DIM

    def encode(self, waves: Sequence[np.ndarray | None], sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (N, Ta, C) float32 and mask (N, Ta) bool; a None or empty wave gives zeros and an all-False row.

        Each wave is mono (S,) at `sample_rate` Hz (resampled linearly to SAMPLE_RATE); any length: its
        frames are cut into Ta equal spans.
        """
        if sample_rate <= 0:
            raise ValueError(f"audio encoder: sample_rate must be positive; got {sample_rate}")
        tokens = torch.zeros(len(waves), self.num_tokens, self.dim)
        mask = torch.zeros(len(waves), self.num_tokens, dtype=torch.bool)
        spectra: dict[int, list[tuple[int, np.ndarray]]] = {}   # frame count -> (row, (M, F)): batch equal lengths
        for k, w in enumerate(waves):
            if w is None:
                continue
            w = np.asarray(w, dtype=np.float32)
            if w.ndim != 1:
                raise ValueError(f"audio encoder: wave {k} has shape {w.shape}; expected a mono (samples,) array")
            if not np.isfinite(w).all():
                raise ValueError(f"audio encoder: wave {k} has NaN or infinite samples")
            if len(w) == 0:
                continue
            spec = log_mel(resample(w, sample_rate))
            spectra.setdefault(spec.shape[1], []).append((k, spec))
        for group in spectra.values():
            rows = [k for k, _ in group]
            tokens[rows] = self._forward(torch.from_numpy(np.stack([s for _, s in group])))  # (n, Ta, C)
            mask[rows] = True
        return tokens, mask

    @torch.no_grad()
    def _forward(self, spec: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        frames = self.model(spec)                                   # (n, M, F) -> (n, C, F)
        # adaptive pooling needs F >= Ta; a clip shorter than Ta frames repeats its frames
        if frames.shape[2] < self.num_tokens:
            frames = functional.interpolate(frames, size=self.num_tokens, mode="nearest")
        return functional.adaptive_avg_pool1d(frames, self.num_tokens).transpose(1, 2).float()   # (n, Ta, C)


def _check(name: str) -> None:
    if name != SCRATCH:
        raise ConfigError(f"encoder.audio_encoder: got {name!r}; only {SCRATCH!r} (a small seeded frozen "
                          "log-mel conv encoder) is available")


def load_audio_encoder(name: str, *, num_tokens: int) -> AudioEncoder:
    """The configured audio encoder ('scratch' only) cutting each sound into `num_tokens` time tokens."""
    _check(name)
    if num_tokens < 1:
        raise ConfigError(f"encoder.audio_tokens: got {num_tokens}; expected a positive number of time tokens")
    return AudioEncoder(name=name, source=f"{SCRATCH}:{AUDIO_RECIPE}", model=build_scratch_audio_model(),
                        num_tokens=num_tokens)


def audio_encoder_identity(name: str) -> str:
    """What the cache key records of an audio encoder, without building it: the name plus the recipe."""
    _check(name)
    return (f"{SCRATCH}|{AUDIO_RECIPE}|sr={SAMPLE_RATE}|fft={N_FFT}|hop={HOP}|mels={N_MELS}|db={DB_RANGE:g}"
            f"|kernel={KERNEL}|dim={SCRATCH_AUDIO_DIM}|seed={SCRATCH_AUDIO_SEED}")
