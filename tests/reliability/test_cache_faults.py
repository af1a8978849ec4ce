"""Feature-cache faults: a writer SIGKILLed mid-write, a truncated file, a corrupt byte.

The cache is a directory published by one rename (em3/data/atomic.py) and verified against
its manifest on every load; tests/data/test_cache.py covers each corruption kind in-process.
Here the writer is a real process killed with SIGKILL, and the previous good cache must
survive untouched.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from em3.config import EncoderConfig
from em3.data.atomic import verify_manifest
from em3.data.cache import build_item_tokens
from tests.data.test_cache import fake_raw, fake_samples

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[2]

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    import dataclasses
    import em3.data.cache as cache
    from em3.config import EncoderConfig
    from tests.data.test_cache import fake_raw, fake_samples

    def die(directory, **kwargs):          # every array written, no manifest yet: the worst moment
        print(sorted(p.name for p in directory.iterdir()), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    cache.write_manifest = die
    enc = EncoderConfig(image_encoder="scratch", text_encoder="scratch", max_text_len=8, cache_dir=sys.argv[2])
    cache.build_item_tokens(dataclasses.replace(fake_raw(), fingerprint="fp-2"), fake_samples(), enc, progress=False)
""")


def _enc(root: Path) -> EncoderConfig:
    return EncoderConfig(image_encoder="scratch", text_encoder="scratch", max_text_len=8, cache_dir=str(root))


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_the_good_cache_and_no_half_cache(tmp_path: Path, caplog):
    root = tmp_path / "cache"
    good = build_item_tokens(fake_raw(), fake_samples(), _enc(root), progress=False)     # key A: fp-1
    good_files = {m: _snapshot(p) for m, p in good.paths.items()}

    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(REPO), str(root)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "tokens.npy" in proc.stdout                                          # it died after writing arrays
    leftovers = [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1                                                  # the half-written temp dir
    published = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    assert published == sorted(good.paths.values())                             # no half cache under a real key
    assert {m: _snapshot(p) for m, p in good.paths.items()} == good_files
    assert verify_manifest(good.paths["image"])["missing"] == 2

    # the next build (another process, after the crash) cleans the leftover and builds key B from scratch
    raw_b = dataclasses.replace(fake_raw(), fingerprint="fp-2")
    with caplog.at_level(logging.INFO, logger="em3.data.cache"):
        rebuilt = build_item_tokens(raw_b, fake_samples(), _enc(root), progress=False)
    assert not any(p.exists() for p in leftovers)
    reference = build_item_tokens(raw_b, fake_samples(), _enc(tmp_path / "clean"), progress=False)
    assert np.array_equal(rebuilt.image, reference.image) and np.array_equal(rebuilt.text, reference.text)
    assert rebuilt.text_tokens == reference.text_tokens
    # and the previous good cache is still a hit, byte for byte
    again = build_item_tokens(fake_raw(), fake_samples(), _enc(root), progress=False)
    assert again.paths == good.paths and {m: _snapshot(p) for m, p in good.paths.items()} == good_files


@pytest.mark.parametrize("fault", ["truncate", "flip_block", "swap_files"])
def test_a_damaged_cache_is_named_and_never_loaded_as_garbage(tmp_path: Path, caplog, fault: str):
    root = tmp_path / "cache"
    first = build_item_tokens(fake_raw(), fake_samples(), _enc(root), progress=False)
    expected_image, expected_text = np.array(first.image), np.array(first.text)
    path = first.paths["image"]
    del first
    target = path / "tokens.npy"
    data = target.read_bytes()
    if fault == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif fault == "flip_block":             # same size, 64 flipped bytes mid-file: only the checksum can tell
        mid = len(data) // 2
        target.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:])
    else:                                   # a valid .npy of the wrong content and shape
        np.save(target, np.zeros((3, 3), np.float16))
    with caplog.at_level(logging.WARNING, logger="em3.data.cache"):
        tokens = build_item_tokens(fake_raw(), fake_samples(), _enc(root), progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(target) in w and "rebuilt" in w for w in warnings), warnings
    assert np.array_equal(tokens.image, expected_image) and np.array_equal(tokens.text, expected_text)
    verify_manifest(tokens.paths["image"])  # what is on disk now passes the full checksum
