"""The user-feature embedding: each user's feature codes looked up in one offset table, fields concatenated.

Shape letters: B users of a batch, U users, F fields, Di embedding size per field.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from em3.data.schema import UserFeatures


class UserFeatureEmbedding(nn.Module):
    """user index (B,) -> (B, F*Di): field f's code looked up in its rows of one shared table.

    The codes are a non-persistent buffer (rebuilt from the samples, like id_index); code 0 (unknown or
    missing) is a trained row of each field, as the unknown item ID is.
    """

    def __init__(self, features: UserFeatures, *, dim: int):
        super().__init__()
        sizes = np.asarray(features.sizes, dtype=np.int64)                      # (F,)
        offsets = np.r_[0, np.cumsum(sizes)[:-1]]                               # (F,) first row of each field
        rows = torch.as_tensor(features.codes + offsets[None, :], dtype=torch.long)
        self.register_buffer("rows", rows, persistent=False)                    # (U, F)
        self.names = features.names
        self.table = nn.Embedding(int(sizes.sum()), dim)
        nn.init.normal_(self.table.weight, std=0.05)

    @property
    def out_dim(self) -> int:
        return len(self.names) * self.table.embedding_dim

    def forward(self, user: Tensor) -> Tensor:
        return self.table(self.rows[user]).flatten(-2)                        # (B, F, Di) -> (B, F*Di)
