"""TopKData from a CTR SampleSet: positives only, cold items out, pooled features, tokens for EM3."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from topk_fakes import FakeFusion

from em3.data.schema import SampleSet
from em3.topk.config import TopKConfig
from em3.topk.data import from_samples, masked_mean
from em3.topk.models import build_model

# items 1..4 (item 3 cold); users 0, 1. (user, item, label, split)
ROWS = [(0, 1, 1, "train"), (0, 2, 0, "train"), (0, 4, 1, "train"), (0, 2, 1, "val"), (0, 3, 1, "test_cold"),
        (1, 2, 1, "train"), (1, 1, 1, "test"), (1, 4, 0, "test"), (1, 3, 1, "test_cold")]


def sample_set() -> SampleSet:
    n = len(ROWS)
    user, item, label, split = (np.array([r[i] for r in ROWS]) for i in range(4))
    return SampleSet(
        num_users=2, num_items=4, item_ids=np.array([10, 20, 30, 40]), user_ids=np.array([7, 8]),
        id_index=np.array([0, 2, 3, 1, 4]), num_id_rows=5, cold_items=np.array([3]),
        user=user.astype(np.int64), item=item.astype(np.int64), label=label.astype(np.float32),
        rating=np.full(n, np.nan, np.float32), timestamp=np.arange(n, dtype=np.int64),
        history=np.zeros((n, 2), np.int64), history_len=np.zeros(n, np.int64),
        splits={s: np.flatnonzero(split == s) for s in ("train", "val", "test", "test_cold")},
        item_attributes=pd.DataFrame(index=range(5)))


def tokens() -> SimpleNamespace:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(5, 3, 6)).astype(np.float16)
    image_mask = np.array([[0, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0]], bool)   # item 3: no image
    text = rng.normal(size=(5, 4, 5)).astype(np.float16)
    text_mask = np.ones((5, 4), bool)
    return SimpleNamespace(image=image, image_mask=image_mask, text=text, text_mask=text_mask)


def test_positives_of_each_split_without_cold_items():
    data = from_samples(sample_set(), name="t")
    assert (data.num_users, data.num_items) == (2, 3)             # items 1, 2, 4 -> 0, 1, 2
    assert sorted(zip(*data.train.nonzero())) == [(0, 0), (0, 2), (1, 1)]
    assert sorted(zip(*data.val.nonzero())) == [(0, 1)]
    assert sorted(zip(*data.test.nonzero())) == [(1, 0)]          # the label-0 test sample is dropped
    assert data.image_feat is None and data.tokens is None


def test_pooled_features_are_masked_means_of_warm_items():
    t = tokens()
    data = from_samples(sample_set(), t, name="t")
    assert data.token_rows.tolist() == [1, 2, 4]
    expected = t.image[1, :2].astype(np.float32).mean(0)
    assert np.allclose(data.image_feat[0], expected, atol=1e-3)
    assert np.allclose(data.image_feat[2], t.image[4, 0].astype(np.float32), atol=1e-3)
    assert np.allclose(masked_mean(t.image, t.image_mask)[3], 0.0)   # no real token -> zeros
    assert data.text_feat.shape == (3, 5)


@pytest.mark.parametrize("mode, shape", [("pooled", (3, 1, 6)), ("tokens", (3, 3, 6))])
def test_em3_content_inputs(mode, shape):
    data = from_samples(sample_set(), tokens(), name="t")
    cfg = TopKConfig(model="em3_freedom", embedding_dim=4, fusion_heads=2, knn_k=2, content_input=mode)
    m = build_model(cfg, data, fusion=FakeFusion(image_dim=6, text_dim=5, dim=4))
    assert tuple(m.content.image.shape) == shape
    if mode == "tokens":
        assert m.content.image_mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]
    u, i = m.representations()
    assert u.shape == (2, 8) and torch.isfinite(i).all()
