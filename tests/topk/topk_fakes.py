"""Helpers of the top-K tests: a small planted-preference TopKData and a fake fusion module."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from em3.topk.data import TopKData, pair_matrix


def planted_data(*, users: int = 60, items: int = 80, per_user: int = 12, seed: int = 0) -> TopKData:
    """Users prefer items whose (noisy) content vectors match their taste: a signal every model can learn."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(users, 4))
    latent = rng.normal(size=(items, 4))
    pref = taste @ latent.T + 0.3 * rng.normal(size=(users, items))         # (U, I)
    top = np.argsort(-pref, axis=1)[:, :per_user]                          # each user's positives
    perm = np.array([rng.permutation(per_user) for _ in range(users)])
    top = np.take_along_axis(top, perm, axis=1)
    n_tr, n_va = int(per_user * 0.7), int(per_user * 0.15)
    u = np.repeat(np.arange(users), per_user).reshape(users, per_user)
    mats = {name: pair_matrix(u[:, sl].ravel(), top[:, sl].ravel(), num_users=users, num_items=items)
            for name, sl in (("train", slice(0, n_tr)), ("val", slice(n_tr, n_tr + n_va)), ("test", slice(n_tr + n_va, None)))}
    image = np.hstack([latent, rng.normal(size=(items, 12))]).astype(np.float32) * 30.0
    text = np.hstack([latent[:, ::-1], rng.normal(size=(items, 8))]).astype(np.float32)
    return TopKData(name="planted", num_users=users, num_items=items, **mats, image_feat=image, text_feat=text)


@dataclass
class FakeOutput:
    embedding: Tensor
    attention: list | None = None


class FakeFusion(nn.Module):
    """Stands in for FusionQFormer: masked mean of linearly projected tokens per modality, summed."""

    def __init__(self, *, image_dim: int, text_dim: int, dim: int):
        super().__init__()
        self.image_proj = nn.Linear(image_dim, dim)
        self.text_proj = nn.Linear(text_dim, dim)

    def forward(self, inputs: dict[str, tuple[Tensor, Tensor]]) -> FakeOutput:
        def pool(x: Tensor, m: Tensor) -> Tensor:
            m = m.float().unsqueeze(-1)
            return (x * m).sum(1) / m.sum(1).clamp(min=1)
        (image, image_mask), (text, text_mask) = inputs["image"], inputs["text"]
        return FakeOutput(pool(self.image_proj(image), image_mask) + pool(self.text_proj(text), text_mask))
