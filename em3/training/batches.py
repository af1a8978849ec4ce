"""Seeded batch plans over a SampleSet: the per-epoch permutation, its per-rank shards, and tensors.

Every process derives the same global permutation from (seed, epoch), so a resumed run
and each rank of a distributed run see exactly the batches an uninterrupted single
process would; rank r takes rows r, r+W, ... of each global batch.
"""
from __future__ import annotations

import numpy as np
import torch

from em3.data.schema import SampleSet


def epoch_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
    """(n,) shuffled row positions for one epoch; a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def global_batches(rows: np.ndarray, *, batch_size: int, max_steps: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """Split rows into global batches; cap at max_steps (0 = all).

    A final batch with fewer rows than processes is dropped so every rank gets a share.
    """
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    if batches and len(batches[-1]) < world_size:
        batches = batches[:-1]
    return batches[:max_steps] if max_steps > 0 else batches


def shard(batch: np.ndarray, *, rank: int, world_size: int) -> np.ndarray:
    """This rank's disjoint share of a global batch."""
    return batch[rank::world_size]


def to_batch(samples: SampleSet, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """The model's batch dict for sample rows: user (B,), item (B,), history (B, L), label (B,)."""
    return {
        "user": torch.as_tensor(samples.user[rows], dtype=torch.long, device=device),
        "item": torch.as_tensor(samples.item[rows], dtype=torch.long, device=device),
        "history": torch.as_tensor(samples.history[rows], dtype=torch.long, device=device),
        "label": torch.as_tensor(samples.label[rows], dtype=torch.float32, device=device),
    }
