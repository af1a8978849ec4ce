"""Item sounds read from WAV files as mono waveforms at SAMPLE_RATE: a missing or unreadable file is a masked
sound (None), logged, never an error."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from em3.data.folder_files import FolderFiles
from em3.data.synthetic_audio import SAMPLE_RATE


def resample(wave: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """`wave` (S,) sampled at `rate` Hz, linearly interpolated to `target` Hz: (S * target / rate,) float32.

    Enough for tones and rhythm; not a band-limited resampler (downsampling can alias).
    """
    if rate == target or len(wave) == 0:
        return wave.astype(np.float32, copy=False)
    n = max(1, int(round(len(wave) * target / rate)))
    return np.interp(np.arange(n) * (rate / target), np.arange(len(wave)), wave).astype(np.float32)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file (8-, 16-, 24- or 32-bit; any channels) -> (mono (S,) float32 in [-1, 1], its sample rate).

    Channels are averaged. Raises wave.Error, EOFError or OSError for a file that is no PCM WAV.
    """
    with wave.open(str(path), "rb") as f:
        width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
        raw = f.readframes(f.getnframes())
    if width == 1:                        # 8-bit WAV is unsigned
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:                      # 24-bit: three little-endian bytes, sign from the top one
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    elif width == 4:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:
        raise wave.Error(f"{width * 8}-bit samples are not supported (8, 16, 24 or 32-bit PCM)")
    x = x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1)   # (S,) mono
    return np.clip(x, -1.0, 1.0).astype(np.float32), rate


class FolderAudio(FolderFiles):
    """`loaders["audio"]` of a folder-backed dataset: item_id -> mono float32 at SAMPLE_RATE, or None (no path,
    no file, or one that is no PCM WAV: counted and logged, see FolderFiles)."""

    kind = "audio"
    errors = (OSError, EOFError, wave.Error, ValueError)
    warn = True

    def decode(self, path: str) -> np.ndarray:
        x, rate = read_wav(path)
        if rate <= 0:
            raise ValueError(f"sample rate {rate}")
        return resample(x, rate, SAMPLE_RATE)
