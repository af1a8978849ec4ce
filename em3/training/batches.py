"""Seeded batch plans over a SampleSet: the per-epoch permutation, its per-rank shards, tensors and ID dropout.

Every process derives the same global permutation from (seed, epoch), so a resumed run
and each rank of a distributed run see exactly the batches an uninterrupted single
process would; rank r takes rows r, r+W, ... of each global batch.
"""
from __future__ import annotations

import numpy as np
import torch

from em3.data.schema import PAD_INDEX, SampleSet


def epoch_permutation(n: int, *, seed: int, epoch: int) -> np.ndarray:
    """(n,) shuffled row positions for one epoch; a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def id_dropout_rng(*, seed: int, epoch: int, rank: int) -> np.random.Generator:
    """The ID-dropout draws of one epoch on one rank: a stream of their own, so turning ID dropout on leaves
    the batches and the model's dropout as they were, and a resumed epoch redraws the same marks."""
    return np.random.default_rng([seed, epoch, rank, 1])


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


def drop_ids(batch: dict[str, torch.Tensor], *, p: float, history: bool,
             rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """ID dropout (DropoutNet): the batch plus `drop_item_id` (B,) and, with `history`, `drop_history_id` (B, L)
    bool marks, each True with probability p (never on padding); the model maps marked IDs to the unknown ID
    in training. p = 0 returns the batch itself."""
    if p <= 0:
        return batch
    b, n_l = batch["history"].shape
    device = batch["item"].device
    out = {**batch, "drop_item_id": torch.as_tensor(rng.random(b) < p, device=device)}            # (B,)
    if history:
        marks = torch.as_tensor(rng.random((b, n_l)) < p, device=device)                          # (B, L)
        out["drop_history_id"] = marks & (batch["history"] != PAD_INDEX)
    return out
