"""Tiny fake SampleSet / ItemTokens / batches for the model tests (random tokens, no encoders)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch

from em3.config import Config, with_arm, with_overrides
from em3.data.schema import SampleSet

try:
    from em3.data.cache import ItemTokens
except ImportError:   # the cache module lands separately; the model only reads these fields
    @dataclass(frozen=True)
    class ItemTokens:  # type: ignore[no-redef]
        image: np.ndarray
        image_mask: np.ndarray
        text: np.ndarray
        text_mask: np.ndarray
        image_grid: tuple[int, int]
        text_tokens: list[list[str]]
        missing_images: int

NUM_ITEMS, NUM_USERS, L = 12, 5, 6
COLD = (11, 12)
TI, CI, TT, CT = 4, 10, 5, 7

SMALL = {"model.fusion.dim": 16, "model.fusion.num_heads": 2, "model.ranker.id_dim": 8,
         "model.ranker.mlp_hidden": (16,), "model.ranker.attention_hidden": (8,)}


def make_samples(*, num_items: int = NUM_ITEMS, num_users: int = NUM_USERS, cold: tuple[int, ...] = COLD) -> SampleSet:
    """The model's view of a sample set: sizes and the id_index (cold items -> UNKNOWN_ID row 1)."""
    id_index = np.zeros(num_items + 1, dtype=np.int64)
    warm = [i for i in range(1, num_items + 1) if i not in cold]
    id_index[warm] = np.arange(2, 2 + len(warm))
    id_index[list(cold)] = 1
    empty = np.zeros(0, dtype=np.int64)
    return SampleSet(
        num_users=num_users, num_items=num_items, item_ids=np.arange(100, 100 + num_items),
        user_ids=np.arange(num_users), id_index=id_index, num_id_rows=2 + len(warm),
        cold_items=np.array(cold), user=empty, item=empty, label=np.zeros(0, np.float32),
        rating=np.zeros(0, np.float32), timestamp=empty, history=np.zeros((0, L), np.int64),
        history_len=empty, splits={}, item_attributes=pd.DataFrame(index=range(num_items + 1)))


def make_tokens(seed: int = 0) -> ItemTokens:
    """Random float16 tokens with ragged masks; item 3 has no image, item 5 no text, row 0 padding."""
    rng = np.random.default_rng(seed)
    n = NUM_ITEMS + 1
    image = (rng.normal(size=(n, TI, CI)) * 10).astype(np.float16)    # raw scales differ ~10x
    text = rng.normal(size=(n, TT, CT)).astype(np.float16)
    image_mask = np.ones((n, TI), bool)
    text_mask = np.arange(TT)[None, :] < rng.integers(2, TT + 1, size=n)[:, None]
    image_mask[3] = False
    text_mask[5] = False
    for arr, mask in ((image, image_mask), (text, text_mask)):
        arr[0] = 0
        mask[0] = False
        arr[~mask] = 0
    return ItemTokens.of(image=image, image_mask=image_mask, text=text, text_mask=text_mask, image_grid=(2, 2),
                      text_labels=[[f"t{j}" for j in range(TT)] for _ in range(n)], image_missing=1)


def make_batch(b: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch with repeated targets, overlapping histories, left padding and one empty history."""
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(1, NUM_ITEMS + 1, (b, L), generator=g)
    lengths = torch.randint(0, L + 1, (b,), generator=g)
    lengths[0] = 0
    history[torch.arange(L)[None, :] < (L - lengths)[:, None]] = 0
    item = torch.randint(1, NUM_ITEMS + 1, (b,), generator=g)
    item[1] = item[0]
    return {"user": torch.randint(0, NUM_USERS, (b,), generator=g), "item": item, "history": history,
            "label": torch.randint(0, 2, (b,), generator=g).float()}


def make_config(arm: str = "em3", **overrides) -> Config:
    return with_overrides(with_arm(Config(), arm), {**SMALL, **{k.replace("__", "."): v for k, v in overrides.items()}})


@pytest.fixture
def samples() -> SampleSet:
    return make_samples()


@pytest.fixture
def tokens() -> ItemTokens:
    return make_tokens()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return make_batch()


@pytest.fixture
def config() -> Callable[..., Config]:
    """config(arm, **{"model__fusion__mode": "blip2"}) -> a small Config for the arm."""
    return make_config
