"""The feature cache: layout, hits, invalidation, corruption detection and atomic writes (scratch encoders)."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import em3.data.cache as cache
from em3.config import EncoderConfig, preset
from em3.data.atomic import clean_stale_temps, new_temp_dir, publish
from em3.data.cache import build_item_tokens
from em3.data.schema import RawDataset, SampleSet
from em3.errors import CacheError

ITEM_IDS = (10, 11, 12, 13, 14, 15)
MISSING, UNREADABLE = 12, 13




def fake_raw(*, fingerprint: str = "fp-1", image_size: tuple[int, int] = (32, 32)) -> RawDataset:
    items = pd.DataFrame({"item_id": ITEM_IDS, "title": [f"title{i}" for i in ITEM_IDS],
                          "text": [f"word{i} red" if i % 2 else f"word{i} blue" for i in ITEM_IDS],
                          "image_path": [f"{i}.png" for i in ITEM_IDS]})

    def load_image(item_id: int) -> Image.Image | None:
        if item_id == MISSING:
            return None
        if item_id == UNREADABLE:
            raise OSError("truncated file")
        return Image.new("RGB", (image_size[1] or 40, image_size[0] or 24), (20 * (item_id - 9), 90, 160))

    inter = pd.DataFrame({"user_id": [1], "item_id": [10], "timestamp": [0], "rating": [5.0]})
    return RawDataset(name="fake set", items=items, interactions=inter, users=None, attribute_columns=(),
                      load_image=load_image, fingerprint=fingerprint, image_size=image_size)


def fake_samples(item_ids: tuple[int, ...] = (14, 10, 12, 11, 15, 13)) -> SampleSet:
    n = len(item_ids)
    empty = np.zeros(0, np.int64)
    return SampleSet(num_users=1, num_items=n, item_ids=np.asarray(item_ids), user_ids=np.array([1]),
                     id_index=np.arange(n + 1), num_id_rows=n + 1, cold_items=empty, user=empty, item=empty,
                     label=np.zeros(0, np.float32), rating=np.zeros(0, np.float32), timestamp=empty,
                     history=np.zeros((0, 3), np.int64), history_len=empty, splits={},
                     item_attributes=pd.DataFrame(index=range(n + 1)))


@pytest.fixture
def enc(tmp_path: Path) -> EncoderConfig:
    return EncoderConfig(image_encoder="scratch", text_encoder="scratch", max_text_len=8,
                         cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every cache build (the expensive encoding pass)."""
    calls: list[Path] = []
    real = cache._write

    def spy(tmp, *args, **kwargs):
        calls.append(tmp)
        return real(tmp, *args, **kwargs)

    monkeypatch.setattr(cache, "_write", spy)
    return calls


def test_layout_rows_follow_item_ids_and_missing_images_are_masked(enc):
    samples = fake_samples()
    tok = build_item_tokens(fake_raw(), samples, enc, progress=False)
    assert tok.image.shape == (7, 4, 448) and tok.image_grid == (2, 2)          # 32x32 -> 2x2 at stride 16
    assert tok.text.shape == (7, 8, 128) and tok.image.dtype == np.float16 == tok.text.dtype
    assert isinstance(tok.image, np.memmap) and isinstance(tok.text, np.memmap)
    assert tok.image_mask.dtype == bool and tok.text_mask.shape == (7, 8)
    assert not tok.image_mask[0].any() and not tok.text_mask[0].any() and tok.text_tokens[0] == []
    assert not np.asarray(tok.image[0]).any() and not np.asarray(tok.text[0]).any()
    for row, item_id in enumerate(samples.item_ids, start=1):
        assert f"title{item_id}" in tok.text_tokens[row]                         # row i+1 = item index i+1
        assert len(tok.text_tokens[row]) == tok.text_mask[row].sum()
        has_image = item_id not in (MISSING, UNREADABLE)
        assert tok.image_mask[row].all() == has_image and tok.image_mask[row].any() == has_image
        assert bool(np.asarray(tok.image[row]).any()) == has_image
    assert tok.missing_images == 2


def test_second_build_hits_the_cache(enc, writes):
    first = build_item_tokens(fake_raw(), fake_samples(), enc, progress=False)
    second = build_item_tokens(fake_raw(), fake_samples(), enc, progress=False)
    assert len(writes) == 2 and second.paths == first.paths                      # one build per modality
    assert np.array_equal(first.image, second.image) and second.text_tokens == first.text_tokens


@pytest.mark.parametrize("change, rebuilt", [("fingerprint", {"image", "text"}), ("max_text_len", {"text"}),
                                             ("text_layers", {"text"}), ("image_size", {"image"}),
                                             ("item_order", {"image", "text"})])
def test_a_changed_input_gets_a_new_cache_of_the_modalities_it_touches(enc, writes, change, rebuilt):
    raw, samples = fake_raw(), fake_samples()
    base = build_item_tokens(raw, samples, enc, progress=False)
    if change == "fingerprint":
        raw = dataclasses.replace(raw, fingerprint="fp-2")
    elif change == "max_text_len":
        enc = dataclasses.replace(enc, max_text_len=6)
    elif change == "text_layers":
        enc = dataclasses.replace(enc, text_layers=1)
    elif change == "image_size":
        enc = dataclasses.replace(enc, image_height=64, image_width=64)
    else:
        samples = fake_samples(tuple(sorted(ITEM_IDS)))
    other = build_item_tokens(raw, samples, enc, progress=False)
    assert len(writes) == 2 + len(rebuilt)
    assert {m for m in base.paths if other.paths[m] != base.paths[m]} == rebuilt
    assert all(p.is_dir() for p in base.paths.values())


def _truncate(paths: dict[str, Path]) -> str:
    f = paths["text"] / "tokens.npy"
    f.write_bytes(f.read_bytes()[:-100])
    return "text"


def _flip_byte(paths: dict[str, Path]) -> str:
    f = paths["image"] / "tokens.npy"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    return "image"


def _edit_manifest(paths: dict[str, Path]) -> str:
    m = json.loads((paths["image"] / "manifest.json").read_text())
    m["meta"]["missing"] = 0
    (paths["image"] / "manifest.json").write_text(json.dumps(m))
    return "image"


def _garble_manifest(paths: dict[str, Path]) -> str:
    (paths["text"] / "manifest.json").write_text('{"files": {')
    return "text"


def _delete_mask(paths: dict[str, Path]) -> str:
    (paths["image"] / "mask.npy").unlink()
    return "image"


def _edit_tokens(paths: dict[str, Path]) -> str:
    (paths["text"] / "labels.json").write_text(json.dumps([["x"]] * 7))
    return "text"


@pytest.mark.parametrize("corrupt", [_truncate, _flip_byte, _edit_manifest, _garble_manifest, _delete_mask,
                                     _edit_tokens])
def test_a_corrupt_cache_is_detected_and_rebuilt_with_a_warning(enc, writes, caplog, corrupt):
    first = build_item_tokens(fake_raw(), fake_samples(), enc, progress=False)
    expected = (np.array(first.image), np.array(first.text), first.text_tokens, first.missing_images)
    paths = dict(first.paths)
    del first
    damaged = corrupt(paths)
    path = paths[damaged]
    with caplog.at_level(logging.WARNING, logger="em3.data.cache"):
        again = build_item_tokens(fake_raw(), fake_samples(), enc, progress=False)
    assert len(writes) == 3                                  # the damaged modality rebuilt, not used; the other kept
    assert any(str(path) in r.getMessage() and "rebuilt" in r.getMessage() for r in caplog.records)
    assert np.array_equal(again.image, expected[0]) and np.array_equal(again.text, expected[1])
    assert again.text_tokens == expected[2] and again.missing_images == expected[3]


def test_a_leftover_temp_dir_is_ignored_and_cleaned(enc, writes):
    root = Path(enc.cache_dir)
    root.mkdir(parents=True)
    dead = root / ".tmp-fake_set-0123-999999999-deadbeef"                        # a writer that died mid-write
    live = root / f".tmp-fake_set-0123-{os.getpid()}-cafecafe"                    # one still writing
    for d in (dead, live):
        d.mkdir()
        (d / "image.npy").write_bytes(b"half")
    tok = build_item_tokens(fake_raw(), fake_samples(), enc, progress=False)
    assert not dead.exists() and live.exists() and {p.parent for p in tok.paths.values()} == {root}
    assert not any(p.name.startswith(".tmp-") and p != live for p in root.iterdir())


def test_a_failed_build_leaves_nothing_behind(enc, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(cache, "write_manifest", boom)
    with pytest.raises(RuntimeError):
        build_item_tokens(fake_raw(), fake_samples(), enc, progress=False)
    assert list(Path(enc.cache_dir).iterdir()) == []                              # no half-written cache
    monkeypatch.undo()
    assert build_item_tokens(fake_raw(), fake_samples(), enc, progress=False).missing_images == 2


def test_publish_loses_a_race_gracefully(tmp_path):
    final = tmp_path / "key"
    a, b = new_temp_dir(final), new_temp_dir(final)
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    assert publish(a, final) is True
    assert publish(b, final) is False and not b.exists()
    assert (final / "x").read_text() == "a" and clean_stale_temps(tmp_path) == []


def test_an_unwritable_cache_dir_raises_cache_error_naming_it(enc, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(CacheError, match="not-a-dir"):
        build_item_tokens(fake_raw(), fake_samples(), dataclasses.replace(enc, cache_dir=str(blocker)),
                          progress=False)


def test_an_item_missing_from_the_item_table_is_named(enc):
    with pytest.raises(CacheError, match="99"):
        build_item_tokens(fake_raw(), fake_samples((10, 99)), enc, progress=False)


def test_varying_image_sizes_use_the_first_readable_image(enc):
    tok = build_item_tokens(fake_raw(image_size=(0, 0)), fake_samples((12, 13, 10)), enc, progress=False)
    assert tok.image_grid == (2, 3)                                               # 24x40 -> 2x3 at stride 16


def test_synthetic_tiny_cache_end_to_end():
    from em3.data.samples import build_samples
    from em3.data.synthetic import generate

    cfg = preset("tiny")
    raw = generate("tiny", 0)
    samples = build_samples(raw, cfg.data)
    tok = build_item_tokens(raw, samples, cfg.encoder, progress=False)
    n = samples.num_items + 1
    assert tok.image.shape == (n, 16, 448) and tok.text.shape == (n, cfg.encoder.max_text_len, 128)
    assert tok.image_grid == (4, 4) and tok.missing_images == 0 and tok.image_mask[1:].all()
    again = build_item_tokens(raw, samples, cfg.encoder, progress=False)
    assert again.paths == tok.paths


def test_a_third_modality_is_cached_beside_the_others_and_a_source_without_it_is_refused(enc, writes):
    raw = dataclasses.replace(fake_raw(), item_fields=("year", "lang"))
    raw.items["year"] = [1990.0, 1995.0, np.nan, 2001.0, 2010.0, 1985.0]
    raw.items["lang"] = ["en", "fr", "en", None, "en", "de"]
    base = build_item_tokens(raw, fake_samples(), enc, progress=False)
    both = build_item_tokens(raw, fake_samples(), enc, modalities=("text", "tabular", "image"), progress=False)
    assert both.names == ("image", "text", "tabular")                            # registry order
    assert len(writes) == 3 and both.paths["image"] == base.paths["image"]       # only tabular was built
    tab = both["tabular"]
    assert tab.tokens.shape == (7, 2, 2 + 2 + enc.tabular_buckets) and tab.mask[1:].all() and not tab.mask[0].any()
    row = 1 + list(fake_samples().item_ids).index(12)                            # item 12: year missing
    assert tab.labels[row] == ["year=?", "lang=en"] and tab.tokens[row, 0, 3] == 1   # the missing flag
    with pytest.raises(CacheError, match="no 'audio' input"):
        build_item_tokens(raw, fake_samples(), enc, modalities=("image", "audio"), progress=False)
