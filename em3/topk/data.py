"""The top-K dataset: train/validation/test user-item sets, frozen item features, optional item tokens.

Shape letters: U users, I items (0-based here, unlike the CTR item index), C feature size,
T tokens. Built from a CTR `SampleSet` (MovieLens protocol) or from the MMRec public format
(`em3.topk.mmrec`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from em3.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TopKData:
    """Positive user-item pairs per split and the item content the multimodal models see."""

    name: str                               # e.g. "movielens-100k", "mmrec:baby"
    num_users: int                          # U
    num_items: int                          # I
    train: sp.csr_matrix                    # (U, I) float32 0/1: training positives (graph edges, BPR pairs)
    val: sp.csr_matrix                      # (U, I) validation positives
    test: sp.csr_matrix                     # (U, I) test positives
    image_feat: np.ndarray | None = None    # (I, Ci) float32 frozen per-item image vector
    text_feat: np.ndarray | None = None     # (I, Ct) float32 frozen per-item text vector
    tokens: object | None = None            # em3.data.cache.ItemTokens, rows addressed by token_rows
    token_rows: np.ndarray | None = None    # (I,) int64 row of each item in `tokens`

    def split(self, name: str) -> sp.csr_matrix:
        if name not in SPLITS:
            raise DataError(f"top-K split {name!r}: expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def summary(self) -> dict[str, int]:
        return {"users": self.num_users, "items": self.num_items,
                **{f"{s}_pairs": int(self.split(s).nnz) for s in SPLITS}}


def pair_matrix(users: np.ndarray, items: np.ndarray, *, num_users: int, num_items: int) -> sp.csr_matrix:
    """(U, I) binary CSR of (user, item) pairs; duplicates collapse to 1."""
    m = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(num_users, num_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def masked_mean(tokens: np.ndarray, mask: np.ndarray, *, chunk: int = 512) -> np.ndarray:
    """(N, T, C) tokens, (N, T) bool mask -> (N, C) float32 mean of the real tokens (zeros if none)."""
    out = np.zeros((tokens.shape[0], tokens.shape[2]), np.float32)
    for s in range(0, tokens.shape[0], chunk):  # chunked: tokens may be a float16 memmap
        t = np.asarray(tokens[s:s + chunk], np.float32)            # (n, T, C)
        m = np.asarray(mask[s:s + chunk], np.float32)[..., None]   # (n, T, 1)
        out[s:s + chunk] = (t * m).sum(1) / np.maximum(m.sum(1), 1.0)
    return out


def from_samples(samples, tokens=None, *, name: str) -> TopKData:
    """Top-K data from a CTR SampleSet: the label==1 samples of its train/val/test splits.

    Cold items (`samples.cold_items`, all of whose ratings sit in `test_cold`) are dropped from
    the catalogue: top-K ranks warm items only, as MMRec's split has no cold items (build the
    samples with `cold_item_frac=0` to keep every item). Item features are the masked means of
    the cached encoder tokens; `tokens` stays attached for EM3's Fusion-Q-Former.
    """
    cold = np.zeros(samples.num_items + 1, bool)
    cold[np.asarray(samples.cold_items, np.int64)] = True
    warm_index = np.flatnonzero(~cold[1:]) + 1                     # (I,) CTR item index of each top-K item
    remap = np.full(samples.num_items + 1, -1, np.int64)
    remap[warm_index] = np.arange(len(warm_index))
    mats = {}
    for s in SPLITS:
        if s not in samples.splits:
            raise DataError(f"SampleSet has no {s!r} split (splits: {', '.join(samples.splits)})")
        rows = samples.splits[s]
        rows = rows[(samples.label[rows] == 1) & ~cold[samples.item[rows]]]
        mats[s] = pair_matrix(samples.user[rows], remap[samples.item[rows]],
                              num_users=samples.num_users, num_items=len(warm_index))
    image = text = None
    if tokens is not None and any(getattr(m, "top", None) is not None for m in getattr(tokens, "modalities", {}).values()):
        raise DataError(f"{name}: the feature cache holds tokens below a trainable top layer "
                        "(encoder.image_top = trained, a CTR-model option); the top-K benchmark needs frozen "
                        "tokens: use encoder.image_top = frozen")
    if tokens is not None:
        image = masked_mean(tokens.image, tokens.image_mask)[warm_index]   # (I, Ci)
        text = masked_mean(tokens.text, tokens.text_mask)[warm_index]      # (I, Ct)
    return TopKData(name=name, num_users=samples.num_users, num_items=len(warm_index), **mats,
                    image_feat=image, text_feat=text, tokens=tokens,
                    token_rows=warm_index if tokens is not None else None)
