"""Negative sampling for BPR: for each (user, positive) pair one item the user has not trained on."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class NegativeSampler:
    """Uniform items outside each user's training set (rejection sampling on sorted user*I+item keys)."""

    def __init__(self, train: sp.csr_matrix, *, rng: np.random.Generator, max_rounds: int = 100):
        coo = train.tocoo()
        self.num_items = train.shape[1]
        self.keys = np.sort(coo.row.astype(np.int64) * self.num_items + coo.col)   # (E,)
        self.rng = rng
        self.max_rounds = max_rounds

    def _is_train(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self.num_items + items
        pos = np.searchsorted(self.keys, keys)
        return (pos < len(self.keys)) & (self.keys[np.minimum(pos, len(self.keys) - 1)] == keys)

    def sample(self, users: np.ndarray) -> np.ndarray:
        """(B,) users -> (B,) int64 items; a user who trained on every item keeps a random draw."""
        items = self.rng.integers(0, self.num_items, size=len(users))
        redo = self._is_train(users, items)
        for _ in range(self.max_rounds):
            if not redo.any():
                break
            items[redo] = self.rng.integers(0, self.num_items, size=int(redo.sum()))
            redo[redo] = self._is_train(users[redo], items[redo])
        return items


def training_pairs(train: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(E,) users and (E,) items of every training positive."""
    coo = train.tocoo()
    return coo.row.astype(np.int64), coo.col.astype(np.int64)
