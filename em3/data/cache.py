"""The feature cache: frozen encoder tokens of every item, computed once per input and memory-mapped.

Shape letters: I items (rows I+1, row 0 = padding), Ti image tokens (H'*W'), Ci image channels,
Tt text tokens (max_text_len), Ct text hidden size.

Layout: `<cache_dir>/<dataset>-<key>/` holding image.npy, image_mask.npy, text.npy, text_mask.npy,
text_tokens.json and manifest.json (sizes, shapes, sha256 and the key's inputs). The key hashes
everything the tokens depend on, so a changed input lands in a new directory; a directory that
fails its manifest check is rebuilt, with a warning naming it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from em3.config import EncoderConfig
from em3.data.atomic import clean_stale_temps, discard, new_temp_dir, publish, verify_manifest, write_manifest
from em3.data.schema import ITEM_COLUMNS, RawDataset, SampleSet
from em3.errors import CacheError
from em3.paths import cache_dir

log = logging.getLogger(__name__)

CACHE_FORMAT = 2          # bump when the layout or the token recipe changes
BATCH_SIZE = 64
FALLBACK_IMAGE_SIZE = (224, 224)
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class ItemTokens:
    image: np.ndarray        # (I+1, Ti, Ci) float16, memory-mapped; row 0 = padding (zeros)
    image_mask: np.ndarray   # (I+1, Ti) bool, True = real token; all False = no image
    text: np.ndarray         # (I+1, Tt, Ct) float16, memory-mapped
    text_mask: np.ndarray    # (I+1, Tt) bool
    image_grid: tuple[int, int]          # (H', W') of the image tokens, Ti = H'*W'
    text_tokens: list[list[str]]         # per item index, the text tokens (for attention plots)
    missing_images: int                  # masked (missing or unreadable) images
    path: Path | None = None             # the cache directory the arrays are mapped from


def read_image(raw: RawDataset, item_id: int) -> Image.Image | None:
    """The item's RGB image, or None when missing or unreadable (logged; the item gets a masked row)."""
    try:
        img = raw.load_image(int(item_id))
        return None if img is None else img.convert("RGB")   # convert() decodes: truncated files fail here
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        log.warning("%s: image of item_id %s is unreadable (%s); masked", raw.name, item_id, exc)
        return None


def resolve_image_size(raw: RawDataset, samples: SampleSet, enc: EncoderConfig) -> tuple[int, int]:
    """(H, W) every image is resized to: the config's, else the source's native size, else the first image's."""
    if enc.image_height > 0:
        return enc.image_height, enc.image_width
    if raw.image_size[0] > 0 and raw.image_size[1] > 0:
        return int(raw.image_size[0]), int(raw.image_size[1])
    for item_id in samples.item_ids:  # sizes vary: the first readable image sets the common size
        img = read_image(raw, item_id)
        if img is not None:
            return img.height, img.width
    return FALLBACK_IMAGE_SIZE  # no image at all: only shapes the all-masked rows


def dataset_fingerprint(raw: RawDataset) -> str:
    """The loader's fingerprint, else a hash of the item table (images not covered: logged)."""
    if raw.fingerprint:
        return raw.fingerprint
    log.warning("%s has no fingerprint; keying the feature cache on its item table only", raw.name)
    cols = [c for c in (*ITEM_COLUMNS, "image_path") if c in raw.items.columns]
    return hashlib.sha256(pd.util.hash_pandas_object(raw.items[cols].astype(str), index=False).values.tobytes()).hexdigest()


def cache_key(raw: RawDataset, samples: SampleSet, enc: EncoderConfig, *,
              image_size: tuple[int, int]) -> tuple[str, dict[str, Any]]:
    """(directory name, the JSON inputs it hashes): everything the cached tokens depend on."""
    from em3.models.encoders import image_encoder_identity, text_encoder_identity

    inputs = {
        "format": CACHE_FORMAT,
        "dataset": raw.name,
        "fingerprint": dataset_fingerprint(raw),
        "item_ids": hashlib.sha256(np.ascontiguousarray(samples.item_ids, dtype=np.int64).tobytes()).hexdigest(),
        "image_encoder": image_encoder_identity(enc.image_encoder),
        "text_encoder": text_encoder_identity(enc.text_encoder),
        "text_layers": enc.text_layers,
        "image_size": list(image_size),
        "max_text_len": enc.max_text_len,
    }
    inputs = json.loads(json.dumps(inputs, sort_keys=True))
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw.name)[:40].strip("._") or "dataset"
    return f"{slug}-{digest}", inputs


def build_item_tokens(raw: RawDataset, samples: SampleSet, enc: EncoderConfig, *, progress: bool = True,
                      on_batch: Callable[[int, int], None] | None = None) -> ItemTokens:
    """Every item's frozen image and text tokens, from the cache or computed (and cached) now.

    `on_batch(done, total)` is called after each encoded batch (for a UI progress bar).
    """
    root = cache_dir(enc.cache_dir)
    size = resolve_image_size(raw, samples, enc)
    key, inputs = cache_key(raw, samples, enc, image_size=size)
    final = root / key
    try:
        root.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(root)
    except OSError as exc:
        raise CacheError(f"{root}: cannot create the feature cache directory ({exc}); set encoder.cache_dir "
                         "or $EM3_CACHE_DIR to a writable place") from exc
    start = time.perf_counter()
    if final.exists():
        try:
            tokens = _load(final, inputs, num_items=samples.num_items)
            log.info("feature cache hit: %s (%.2f s)", final, time.perf_counter() - start)
            return tokens
        except CacheError as exc:
            log.warning("feature cache %s failed its check and is rebuilt: %s", final, exc)
            try:
                discard(final)
            except OSError as err:
                raise CacheError(f"{final}: corrupt and cannot be removed ({err}); delete it by hand") from err
    try:
        tmp = new_temp_dir(final)
    except OSError as exc:
        raise CacheError(f"{root}: cannot write the feature cache ({exc})") from exc
    try:
        _write(tmp, raw, samples, enc, size=size, inputs=inputs, progress=progress, on_batch=on_batch)
        if not publish(tmp, final):
            log.info("feature cache %s was built concurrently by another process; using theirs", final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tokens = _load(final, inputs, num_items=samples.num_items)  # a failure here is a CacheError naming the file
    log.info("feature cache built: %s (%.1f s)", final, time.perf_counter() - start)
    return tokens


def _load(path: Path, inputs: dict[str, Any], *, num_items: int) -> ItemTokens:
    meta = verify_manifest(path)
    if meta.get("inputs") != inputs:
        raise CacheError(f"{path / 'manifest.json'}: built for other inputs than its key says")
    try:
        image = np.load(path / "image.npy", mmap_mode="r")
        text = np.load(path / "text.npy", mmap_mode="r")
        image_mask = np.load(path / "image_mask.npy")
        text_mask = np.load(path / "text_mask.npy")
        words = json.loads((path / "text_tokens.json").read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable cache file ({exc})") from exc
    if not (image.shape[0] == text.shape[0] == len(words) == num_items + 1):
        raise CacheError(f"{path}: {image.shape[0]} rows, expected {num_items + 1} (items + padding)")
    return ItemTokens(image=image, image_mask=image_mask, text=text, text_mask=text_mask,
                      image_grid=tuple(meta["image_grid"]), text_tokens=words,
                      missing_images=int(meta["missing_images"]), path=path)


def item_texts(raw: RawDataset, item_ids: np.ndarray) -> list[str]:
    """The text each item's tokens come from (title + description), in `item_ids` order."""
    from em3.models.encoders import item_text

    items = raw.items.drop_duplicates("item_id").set_index("item_id")
    missing = item_ids[~np.isin(item_ids, items.index.to_numpy())]
    if len(missing):
        raise CacheError(f"{raw.name}: item_ids {missing[:5].tolist()} of the sample set are not in the item table")
    rows = items.loc[item_ids]
    return [item_text(t, d) for t, d in zip(rows["title"], rows["text"])]


def _write(tmp: Path, raw: RawDataset, samples: SampleSet, enc: EncoderConfig, *, size: tuple[int, int],
           inputs: dict[str, Any], progress: bool, on_batch: Callable[[int, int], None] | None) -> None:
    from em3.models.encoders import load_image_encoder, load_text_encoder

    item_ids = np.asarray(samples.item_ids)
    n_items = len(item_ids)
    texts = item_texts(raw, item_ids)
    image_enc = load_image_encoder(enc.image_encoder)
    text_enc = load_text_encoder(enc.text_encoder, enc.text_layers, corpus=texts)
    grid, ci = image_enc.grid_and_dim(size)
    ti, tt, ct = grid[0] * grid[1], enc.max_text_len, text_enc.dim

    fmt = np.lib.format
    image = fmt.open_memmap(tmp / "image.npy", mode="w+", dtype=np.float16, shape=(n_items + 1, ti, ci))
    text = fmt.open_memmap(tmp / "text.npy", mode="w+", dtype=np.float16, shape=(n_items + 1, tt, ct))
    image_mask = np.zeros((n_items + 1, ti), dtype=bool)
    text_mask = np.zeros((n_items + 1, tt), dtype=bool)
    image[0], text[0] = 0, 0                       # row 0 = padding
    words: list[list[str]] = [[]]
    missing = 0
    bar = tqdm(total=n_items, desc=f"Encoding {raw.name} items", unit="item", disable=not progress)
    for lo in range(0, n_items, BATCH_SIZE):
        hi = min(lo + BATCH_SIZE, n_items)
        images = [read_image(raw, i) for i in item_ids[lo:hi]]
        missing += sum(im is None for im in images)
        tok, mask = image_enc.encode(images, size=size)                       # (n, Ti, Ci), (n, Ti)
        image[lo + 1:hi + 1] = np.clip(tok.numpy(), -FLOAT16_MAX, FLOAT16_MAX)
        image_mask[lo + 1:hi + 1] = mask.numpy()
        states, tmask, batch_words = text_enc.encode(texts[lo:hi], max_len=tt)  # (n, Tt, Ct), (n, Tt)
        text[lo + 1:hi + 1] = np.clip(states.numpy(), -FLOAT16_MAX, FLOAT16_MAX)
        text_mask[lo + 1:hi + 1] = tmask.numpy()
        words.extend(batch_words)
        bar.update(hi - lo)
        if on_batch is not None:
            on_batch(hi, n_items)
    bar.close()
    image.flush()
    text.flush()
    del image, text
    np.save(tmp / "image_mask.npy", image_mask)
    np.save(tmp / "text_mask.npy", text_mask)
    (tmp / "text_tokens.json").write_text(json.dumps(words))
    if missing:
        log.warning("%s: %d of %d items have no readable image (masked)", raw.name, missing, n_items)
    write_manifest(tmp, meta={"inputs": inputs, "image_grid": list(grid), "missing_images": missing,
                              "num_items": n_items, "image_encoder": image_enc.source,
                              "text_encoder": text_enc.source})
