"""The synthetic audio preset: deterministic sounds, audio-only attributes in the ground truth, other presets unchanged,
and the files source's WAV column (audio/ folder, escaping paths refused, missing files masked)."""
from __future__ import annotations

import hashlib
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from em3.data import synthetic
from em3.data.files import load_files
from em3.data.synthetic import generate
from em3.data.synthetic_audio import AUDIO_ATTRIBUTES, NUM_SAMPLES, SAMPLE_RATE, render_audio
from em3.data.wav import read_wav
from em3.errors import DataError
from tests.data.conftest import write_files_dataset

# digest(generate(preset, seed)) computed from the generator before the audio preset existed (issue 15):
# the audio stream must not move a byte of the other presets.
PINNED = {("tiny", 0): "72704eada6d1c320", ("tiny", 3): "b815b5e6729477e1",
          ("small", 0): "01b21153da76a57f", ("small", 3): "f8ee017d789aeebd"}


def digest(raw) -> str:
    """sha256 over the fingerprint, every items / interactions column and every ground-truth array."""
    h = hashlib.sha256(raw.fingerprint.encode())
    arrays = [(c, frame[c].to_numpy()) for frame in (raw.items, raw.interactions) for c in frame.columns]
    for name, v in arrays + [(k, np.asarray(raw.ground_truth[k])) for k in sorted(raw.ground_truth)]:
        h.update(name.encode())
        text = v.dtype.kind in "OU"
        h.update("\x1f".join(map(str, v.ravel())).encode() if text else np.ascontiguousarray(v).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("preset, seed", sorted(PINNED))
def test_other_presets_unchanged(preset: str, seed: int):
    raw = generate(preset, seed)
    assert digest(raw) == PINNED[preset, seed]
    assert "audio" not in raw.loaders and "pitch" not in raw.items.columns


def test_render_is_deterministic_and_bounded():
    kw = dict(phase=1.0, detune=0.01, gain=0.8, offset=0.03, stretch=1.05, noise=0.01, noise_seed=7)
    a, b = render_audio("A4", "pulse", **kw), render_audio("A4", "pulse", **kw)
    assert a.dtype == np.float32 and a.shape == (NUM_SAMPLES,) and np.array_equal(a, b)
    assert np.abs(a).max() <= 1.0
    assert not np.array_equal(a, render_audio("A4", "pulse", **{**kw, "noise_seed": 8}))
    with pytest.raises(ValueError, match=r"pitch 'C9' is unknown"):
        render_audio("C9", "pulse")


def test_rhythm_sets_how_much_of_the_clip_sounds():
    loud = {r: float((np.abs(render_audio("A4", r)) > 0.05).mean()) for r in AUDIO_ATTRIBUTES["rhythm"]}
    assert loud["drone"] > loud["pulse"] > loud["triplet"] > loud["patter"] > 0.05, loud


def test_pitch_is_the_fundamental():
    for pitch, hz in (("A3", 220.0), ("A5", 880.0)):
        spectrum = np.abs(np.fft.rfft(render_audio(pitch, "drone")))
        assert abs(np.argmax(spectrum) * SAMPLE_RATE / NUM_SAMPLES - hz) < 2.0


def test_audio_preset_adds_audio_attributes():
    raw = generate("audio", 0)
    truth = raw.ground_truth
    names = list(truth["attribute_names"])
    assert names[-2:] == ["pitch", "rhythm"] and set(names[-2:]) <= set(raw.attribute_columns)
    assert list(truth["attribute_modality"][-2:]) == ["audio", "audio"]
    assert list(truth["attribute_sizes"][-2:]) == [5, 4] and truth["user_tastes"].shape[1] == 7
    assert set(raw.items["pitch"]) == set(AUDIO_ATTRIBUTES["pitch"])
    # the coded attribute matches the column, and the audio weights are comparable to the others
    codes = truth["item_attributes"][:, names.index("rhythm")]
    assert (np.asarray(AUDIO_ATTRIBUTES["rhythm"])[codes] == raw.items["rhythm"].to_numpy()).all()
    assert 0.5 < truth["attribute_weight"][-2:].min() and truth["attribute_weight"][-2:].max() < 1.5
    load = raw.loaders["audio"]
    item = int(raw.items["item_id"].iloc[3])
    w = load(item)
    assert w.dtype == np.float32 and w.shape == (NUM_SAMPLES,) and np.array_equal(w, load(item))
    assert load(10**9) is None
    assert raw.fingerprint != generate("small", 0).fingerprint and generate("audio", 0).fingerprint == raw.fingerprint


def test_audio_preset_keeps_image_and_text_draws(monkeypatch: pytest.MonkeyPatch):
    """The audio stream is separate: without it the same preset draws the same items and impressions."""
    audio = generate("audio", 0)
    monkeypatch.setattr(synthetic, "AUDIO_PRESETS", ())
    silent = synthetic.generate("audio", 0)
    assert "pitch" not in silent.items.columns and "audio" not in silent.loaders
    assert audio.items.drop(columns=list(AUDIO_ATTRIBUTES)).equals(silent.items)
    keys = ["user_id", "item_id", "timestamp"]
    assert audio.interactions[keys].equals(silent.interactions[keys])   # only the labels hear the sound
    assert not audio.interactions["label"].equals(silent.interactions["label"])


def _write_wav(path: Path, x: np.ndarray, *, rate: int, width: int = 2, channels: int = 1) -> None:
    frames = np.repeat(x[:, None], channels, axis=1).ravel()
    data = {1: lambda v: (v * 127 + 128).astype(np.uint8).tobytes(),
            2: lambda v: (v * 32767).astype("<i2").tobytes(),
            4: lambda v: (v * 2147483647).astype("<i4").tobytes()}[width](frames)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(data)


@pytest.mark.parametrize("width, channels", [(1, 1), (2, 1), (2, 2), (4, 1)])
def test_read_wav_formats(tmp_path: Path, width: int, channels: int):
    x = 0.5 * np.sin(np.linspace(0, 20, 800))
    _write_wav(tmp_path / "a.wav", x, rate=8000, width=width, channels=channels)
    y, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and y.dtype == np.float32 and y.shape == (800,)
    assert np.abs(y - x).max() < (0.02 if width == 1 else 1e-3)


def _audio_dataset(root: Path, paths: list[str]) -> Path:
    write_files_dataset(root)
    (root / "audio").mkdir()
    _write_wav(root / "audio" / "0.wav", render_audio("A4", "drone"), rate=SAMPLE_RATE)
    _write_wav(root / "audio" / "1.wav", render_audio("A3", "pulse")[::2].copy(), rate=8000, channels=2)
    items = pd.read_csv(root / "items.csv", keep_default_na=False, dtype=str)
    items.assign(audio_path=paths).to_csv(root / "items.csv", index=False)
    return root


def test_files_source_reads_audio(tmp_path: Path):
    raw = load_files(_audio_dataset(tmp_path / "mine", ["0.wav", "1.wav", "", "gone.wav", "0.wav"]))
    assert "audio_path" not in raw.attribute_columns and raw.attribute_columns == ("colour",)
    load = raw.loaders["audio"]
    a, b = load(10), load(11)
    assert a.shape == (SAMPLE_RATE,) and np.abs(a - render_audio("A4", "drone")).max() < 1e-3
    assert b.dtype == np.float32 and abs(len(b) - SAMPLE_RATE) <= 1   # 8 kHz stereo -> 16 kHz mono
    assert load(12) is None and load(13) is None and load.missing == {12, 13}   # no path; no file
    without = load_files(write_files_dataset(tmp_path / "plain"))
    assert "audio" not in without.loaders


def test_files_audio_fingerprint_covers_the_folder(tmp_path: Path):
    root = _audio_dataset(tmp_path / "mine", ["0.wav", "1.wav", "", "", ""])
    before = load_files(root).fingerprint
    _write_wav(root / "audio" / "0.wav", render_audio("A5", "drone"), rate=SAMPLE_RATE, width=4)
    assert load_files(root).fingerprint != before


def test_files_audio_unreadable_is_masked(tmp_path: Path):
    root = _audio_dataset(tmp_path / "mine", ["0.wav", "bad.wav", "", "", ""])
    (root / "audio" / "bad.wav").write_bytes(b"not a wav file")
    load = load_files(root).loaders["audio"]
    assert load(11) is None and 11 in load.unreadable and load(10) is not None


@pytest.mark.parametrize("bad", ["../images/0.png", "/etc/passwd"])
def test_files_audio_path_must_stay_inside(tmp_path: Path, bad: str):
    root = _audio_dataset(tmp_path / "mine", ["0.wav", bad, "", "", ""])
    with pytest.raises(DataError, match=r"items\.csv: row 2, column 'audio_path': got .*stays inside"):
        load_files(root)
