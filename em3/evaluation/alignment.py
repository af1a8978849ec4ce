"""Did CIC align anything? Wang & Isola's alignment and uniformity, and pair statistics, over the catalogue.

The per-epoch `align/alignment` / `align/uniformity` (em3.training.run.embedding_quality) look at
one validation batch. These look at every warm item once, at the end of a run, in CIC's shared
space (explain/embeddings.npz: content_aligned, id_aligned, both L2-normalised). Cold items are
left out: their ID is the one unknown ID they all share. A run without CIC heads has no shared
space and gets none of these metrics.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from em3.evaluation.views_alignment import (cold_rows, match_rate, mean_pairwise_cosine, pair_cosines,
                                            shared_space)
from em3.models.losses import alignment, uniformity

UNIFORMITY_SAMPLE = 2048   # rows for the O(N²) uniformity (MovieLens: all 1,682 items; larger catalogues: a sample)


def _sample(x: np.ndarray, *, size: int, seed: int = 0) -> np.ndarray:
    return x if len(x) <= size else x[np.random.default_rng(seed).choice(len(x), size=size, replace=False)]


def cic_space_metrics(emb: Mapping[str, np.ndarray]) -> dict[str, float]:
    """{align/...: value} over the warm items of an embeddings export; {} without a shared space or < 2 warm items.

    alignment: mean ‖c_i − e_i‖² of matched unit pairs (0 = coincide, 2 = orthogonal); uniformity:
    log mean exp(−2‖x_i − x_j‖²) per side (0 = collapsed to a point, about −3.9 for a uniform
    high-dimensional sphere); matched vs random cosines; top-1: the share of items whose own ID is
    the nearest ID to their content (chance 1/N); mean pairwise cosine per side (near 1 = a cone).
    """
    space = shared_space(emb)
    if space is None:
        return {}
    warm = ~cold_rows(emb)
    warm[0] = False                                                      # row 0 is padding
    content, ids = space[0][warm].astype(np.float64), space[1][warm].astype(np.float64)
    if len(content) < 2:
        return {}
    matched, random = pair_cosines(content, ids)
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x))              # noqa: E731
    return {
        "align/catalogue_alignment": float(alignment(t(content), t(ids))),
        "align/catalogue_uniformity_content": float(uniformity(t(_sample(content, size=UNIFORMITY_SAMPLE)))),
        "align/catalogue_uniformity_id": float(uniformity(t(_sample(ids, size=UNIFORMITY_SAMPLE)))),
        "align/matched_cosine": float(matched.mean()), "align/random_cosine": float(random.mean()),
        "align/top1_content_to_id": match_rate(content, ids), "align/top1_chance": 1.0 / len(content),
        "align/mean_cosine_content": mean_pairwise_cosine(content), "align/mean_cosine_id": mean_pairwise_cosine(ids),
        "align/warm_items": float(len(content)),
    }
