"""The feature cache: every item's frozen tokens of each modality, computed once per input and memory-mapped.

Shape letters: I items (rows I+1, row 0 = padding), T tokens and C width of a modality (Ti/Ci image,
Tt/Ct text).

Layout: one directory per modality, `<cache_dir>/<dataset>-<modality>-<key>/`, holding tokens.npy,
mask.npy, labels.json and manifest.json (sizes, shapes, sha256 and the key's inputs). The key hashes
everything the tokens depend on (the dataset, the item order and the modality's own inputs, see
em3/modalities/), so a changed input lands in a new directory and adding a modality rebuilds no other;
a directory that fails its manifest check is rebuilt, with a warning naming it.
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
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from em3 import modalities as registry
from em3.config import EncoderConfig
from em3.data.atomic import clean_stale_temps, discard, new_temp_dir, publish, verify_manifest, write_manifest
from em3.data.schema import ITEM_COLUMNS, RawDataset, SampleSet
from em3.errors import CacheError
from em3.modalities.base import ModalityTokens, TokenTop
from em3.paths import cache_dir

log = logging.getLogger(__name__)

CACHE_FORMAT = 3          # bump when the layout or the token recipe changes (3: one directory per modality)
BATCH_SIZE = 64
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class ItemTokens:
    """The cached tokens of the modalities a run fuses, by name, in registry order."""

    modalities: dict[str, ModalityTokens]
    paths: dict[str, Path] | None = None            # each modality's cache directory

    def __getitem__(self, name: str) -> ModalityTokens:
        if name not in self.modalities:
            raise CacheError(f"ItemTokens: no {name!r} tokens (built for {', '.join(self.modalities) or 'none'})")
        return self.modalities[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.modalities)

    @property
    def num_rows(self) -> int:
        return next(iter(self.modalities.values())).tokens.shape[0]

    # The two original modalities' arrays, as the top-K code and older callers read them.
    @property
    def image(self) -> np.ndarray:
        return self["image"].tokens

    @property
    def image_mask(self) -> np.ndarray:
        return self["image"].mask

    @property
    def text(self) -> np.ndarray:
        return self["text"].tokens

    @property
    def text_mask(self) -> np.ndarray:
        return self["text"].mask

    @property
    def image_grid(self) -> tuple[int, int]:
        return self["image"].grid

    @property
    def text_tokens(self) -> list[list[str]]:
        return self["text"].labels

    @property
    def missing_images(self) -> int:
        return self["image"].missing

    @staticmethod
    def of(**arrays: Any) -> "ItemTokens":
        """Tokens from in-memory arrays (tests, tools): `<name>=` and `<name>_mask=` per modality, and optional
        `<name>_labels=`, `<name>_grid=`; e.g. ItemTokens.of(image=..., image_mask=..., image_grid=(2, 2))."""
        names = registry.ordered([k for k in arrays if k in registry.NAMES])
        out = {}
        for m in names:
            tokens = arrays[m]
            labels = arrays.get(f"{m}_labels") or [[] for _ in range(tokens.shape[0])]
            out[m] = ModalityTokens(tokens=tokens, mask=np.asarray(arrays[f"{m}_mask"], dtype=bool), labels=labels,
                                    grid=arrays.get(f"{m}_grid"), missing=int(arrays.get(f"{m}_missing", 0)))
        return ItemTokens(out)


def dataset_fingerprint(raw: RawDataset) -> str:
    """The loader's fingerprint, else a hash of the item table (images not covered: logged)."""
    if raw.fingerprint:
        return raw.fingerprint
    log.warning("%s has no fingerprint; keying the feature cache on its item table only", raw.name)
    cols = [c for c in (*ITEM_COLUMNS, "image_path") if c in raw.items.columns]
    return hashlib.sha256(pd.util.hash_pandas_object(raw.items[cols].astype(str), index=False).values.tobytes()).hexdigest()


def cache_key(raw: RawDataset, samples: SampleSet, enc: EncoderConfig, modality: str) -> tuple[str, dict[str, Any]]:
    """(directory name, the JSON inputs it hashes): everything one modality's cached tokens depend on."""
    inputs = {
        "format": CACHE_FORMAT,
        "modality": modality,
        "dataset": raw.name,
        "fingerprint": dataset_fingerprint(raw),
        "item_ids": hashlib.sha256(np.ascontiguousarray(samples.item_ids, dtype=np.int64).tobytes()).hexdigest(),
        **registry.get(modality).key_inputs(raw, samples, enc),
    }
    inputs = json.loads(json.dumps(inputs, sort_keys=True))
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw.name)[:40].strip("._") or "dataset"
    return f"{slug}-{modality}-{digest}", inputs


def check_available(raw: RawDataset, names: Sequence[str]) -> None:
    """Refuse, by name, a modality the source has no input for (e.g. audio on MovieLens)."""
    for m in names:
        if not registry.get(m).available(raw):
            raise CacheError(f"model.fusion.modalities: {raw.name} has no {m!r} input "
                             f"({registry.get(m).describe}); drop {m!r} or use a source that has it")


def build_item_tokens(raw: RawDataset, samples: SampleSet, enc: EncoderConfig, *,
                      modalities: Sequence[str] = registry.DEFAULT, progress: bool = True,
                      on_batch: Callable[[int, int], None] | None = None) -> ItemTokens:
    """Every item's frozen tokens of each of `modalities`, from the cache or computed (and cached) now.

    `on_batch(done, total)` is called after each encoded batch (for a UI progress bar); done/total count
    item encodings over the modalities still to build.
    """
    names = registry.ordered(modalities)
    unknown = [m for m in modalities if m not in registry.NAMES]
    if unknown or not names:
        raise CacheError(f"build_item_tokens: modalities {list(modalities)}; expected some of {', '.join(registry.NAMES)}")
    check_available(raw, names)
    root = cache_dir(enc.cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(root)
    except OSError as exc:
        raise CacheError(f"{root}: cannot create the feature cache directory ({exc}); set encoder.cache_dir "
                         "or $EM3_CACHE_DIR to a writable place") from exc
    keys = {m: cache_key(raw, samples, enc, m) for m in names}
    todo = [m for m in names if not (root / keys[m][0]).exists()]
    total, done = len(todo) * samples.num_items, [0]

    def step(n: int) -> None:
        done[0] += n
        if on_batch is not None:
            on_batch(done[0], total)

    out, paths = {}, {}
    for m in names:
        key, inputs = keys[m]
        out[m] = _build_one(root / key, inputs, raw, samples, enc, m, progress=progress, step=step)
        paths[m] = root / key
    return ItemTokens(out, paths)


def _build_one(final: Path, inputs: dict[str, Any], raw: RawDataset, samples: SampleSet, enc: EncoderConfig,
               modality: str, *, progress: bool, step: Callable[[int], None]) -> ModalityTokens:
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
        raise CacheError(f"{final.parent}: cannot write the feature cache ({exc})") from exc
    try:
        _write(tmp, raw, samples, enc, modality, inputs=inputs, progress=progress, step=step)
        if not publish(tmp, final):
            log.info("feature cache %s was built concurrently by another process; using theirs", final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tokens = _load(final, inputs, num_items=samples.num_items)  # a failure here is a CacheError naming the file
    log.info("feature cache built: %s (%.1f s)", final, time.perf_counter() - start)
    return tokens


def _load(path: Path, inputs: dict[str, Any], *, num_items: int) -> ModalityTokens:
    meta = verify_manifest(path)
    if meta.get("inputs") != inputs:
        raise CacheError(f"{path / 'manifest.json'}: built for other inputs than its key says")
    try:
        tokens = np.load(path / "tokens.npy", mmap_mode="r")
        mask = np.load(path / "mask.npy")
        labels = json.loads((path / "labels.json").read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable cache file ({exc})") from exc
    if not (tokens.shape[0] == mask.shape[0] == len(labels) == num_items + 1):
        raise CacheError(f"{path}: {tokens.shape[0]} rows, expected {num_items + 1} (items + padding)")
    grid = meta.get("grid")
    return ModalityTokens(tokens=tokens, mask=mask, labels=labels, grid=tuple(grid) if grid else None,
                          missing=int(meta["missing"]), top=_load_top(path, meta))


def _load_top(path: Path, meta: dict[str, Any]) -> TokenTop | None:
    """The cached trainable last layer (top_weight.npy, top_bias.npy, meta 'top_activation'), if any."""
    if "top_activation" not in meta:
        return None
    try:
        return TokenTop(weight=np.load(path / "top_weight.npy"), bias=np.load(path / "top_bias.npy"),
                        activation=meta["top_activation"])
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable top layer files ({exc})") from exc


def _write(tmp: Path, raw: RawDataset, samples: SampleSet, enc: EncoderConfig, modality: str, *,
           inputs: dict[str, Any], progress: bool, step: Callable[[int], None]) -> None:
    item_ids = np.asarray(samples.item_ids)
    n_items = len(item_ids)
    encoder = registry.get(modality).open(raw, samples, enc)
    t, c = encoder.shape
    tokens = np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=np.float16, shape=(n_items + 1, t, c))
    mask = np.zeros((n_items + 1, t), dtype=bool)
    tokens[0] = 0                                   # row 0 = padding
    labels: list[list[str]] = [[]]
    bar = tqdm(total=n_items, desc=f"Encoding {raw.name} items ({modality})", unit="item", disable=not progress)
    for lo in range(0, n_items, BATCH_SIZE):
        hi = min(lo + BATCH_SIZE, n_items)
        batch = encoder.encode(item_ids[lo:hi])                                   # (n, T, C), (n, T)
        tokens[lo + 1:hi + 1] = np.clip(batch.tokens, -FLOAT16_MAX, FLOAT16_MAX)
        mask[lo + 1:hi + 1] = batch.mask
        labels.extend(batch.labels)
        bar.update(hi - lo)
        step(hi - lo)
    bar.close()
    tokens.flush()
    del tokens
    missing = int((~mask[1:].any(axis=1)).sum())
    np.save(tmp / "mask.npy", mask)
    top: TokenTop | None = getattr(encoder, "top", None)
    if top is not None:   # the tokens are this layer's input: keep its pretrained weights beside them
        np.save(tmp / "top_weight.npy", top.weight.astype(np.float32))
        np.save(tmp / "top_bias.npy", top.bias.astype(np.float32))
    (tmp / "labels.json").write_text(json.dumps(labels))
    if missing:
        log.warning("%s: %d of %d items have no readable %s (masked)", raw.name, missing, n_items, modality)
    meta = {"inputs": inputs, "grid": list(encoder.grid) if encoder.grid else None,
            "missing": missing, "num_items": n_items, "encoder": encoder.source}
    write_manifest(tmp, meta=meta if top is None else {**meta, "top_activation": top.activation})
