"""A tiny SampleSet and a model with EM3Model's forward contract, for trainer tests without the real pipeline."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from em3.data.schema import SampleSet


def fake_samples(*, users: int = 20, items: int = 30, n: int = 600, seed: int = 0) -> SampleSet:
    """Random users/items whose label depends on (user + item) parity, so a model can learn it."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, n)
    item = rng.integers(1, items + 1, n)
    label = ((user + item) % 2 == 0).astype(np.float32)
    history = rng.integers(0, items + 1, (n, 4))
    order = rng.permutation(n)
    splits = {"train": order[: n * 7 // 10], "val": order[n * 7 // 10: n * 85 // 100],
              "test": order[n * 85 // 100:], "test_cold": np.zeros(0, dtype=np.int64)}
    return SampleSet(num_users=users, num_items=items, item_ids=np.arange(100, 100 + items),
                     user_ids=np.arange(1000, 1000 + users), id_index=np.r_[0, np.arange(2, items + 2)],
                     num_id_rows=items + 2, cold_items=np.zeros(0, dtype=np.int64), user=user, item=item,
                     label=label, rating=np.full(n, np.nan, np.float32), timestamp=np.arange(n),
                     history=history, history_len=(history > 0).sum(1), splits=splits,
                     item_attributes=pd.DataFrame(index=range(items + 1)))


class FakeOutput:
    def __init__(self, logits: torch.Tensor):
        self.logits = logits
        self.cic_content = self.cic_id = self.cic_neg_content = self.cic_neg_id = None
        self.history_attention = None


class FakeModel(nn.Module):
    """user/item embeddings -> MLP with dropout; `poison` makes the logits NaN."""

    def __init__(self, samples: SampleSet, *, dropout: float = 0.2):
        super().__init__()
        self.user_emb = nn.Embedding(samples.num_users, 8)
        self.item_emb = nn.Embedding(samples.num_items + 1, 8)
        self.mlp = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))
        self.poison = False

    def forward(self, batch: dict[str, torch.Tensor]) -> FakeOutput:
        x = torch.cat([self.user_emb(batch["user"]), self.item_emb(batch["item"])], dim=-1)   # (B, 16)
        logits = self.mlp(x).squeeze(-1)                                                      # (B,)
        return FakeOutput(logits * float("nan") if self.poison else logits)
