"""Losses and embedding measures, against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from em3.models.losses import alignment, bce_loss, cic_loss, uniformity


def test_bce_hand_value():
    got = bce_loss(torch.tensor([0.0, 2.0]), torch.tensor([1, 0]))
    expected = (math.log(2) + math.log(1 + math.e ** 2)) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_cic_in_batch_hand_value():
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    i = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = 0.5
    # content->ID row 0: logits [1, .6]/t; row 1: [0, .8]/t; ID->content row 0: [1, 0]/t; row 1: [.6, .8]/t
    ce = lambda row, k: -(row[k] / t - math.log(sum(math.exp(v / t) for v in row)))
    expected = 0.5 * ((ce([1, .6], 0) + ce([0, .8], 1)) / 2 + (ce([1, 0], 0) + ce([.6, .8], 1)) / 2)
    assert cic_loss(c, i, temperature=t).item() == pytest.approx(expected, rel=1e-5)


def test_cic_identity_pairs_beat_shuffled_pairs():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(32, 16, generator=g), dim=-1)
    shuffled = x[torch.randperm(32, generator=g)]
    assert cic_loss(x, x, temperature=0.1) < cic_loss(x, shuffled, temperature=0.1)
    neg = F.normalize(torch.randn(32, 8, 16, generator=g), dim=-1)
    assert (cic_loss(x, x, temperature=0.1, neg_content=neg, neg_id=neg)
            < cic_loss(x, shuffled, temperature=0.1, neg_content=neg, neg_id=neg))


def test_cic_sampled_hand_value():
    c = torch.tensor([[1.0, 0.0]])
    i = torch.tensor([[0.0, 1.0]])
    neg_id = torch.tensor([[[1.0, 0.0]]])        # content->ID: pos 0, neg 1
    neg_content = torch.tensor([[[0.0, -1.0]]])  # ID->content: pos 0, neg -1
    t = 1.0
    expected = 0.5 * (math.log(1 + math.e) + math.log(1 + math.exp(-1)))
    got = cic_loss(c, i, temperature=t, neg_content=neg_content, neg_id=neg_id)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_cic_needs_both_negatives():
    x = torch.ones(2, 3)
    with pytest.raises(ValueError, match="neg_content and neg_id"):
        cic_loss(x, x, temperature=0.1, neg_content=torch.ones(2, 1, 3))


def test_alignment_and_uniformity_hand_values():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert alignment(x, x).item() == pytest.approx(0.0)
    assert alignment(x, -x).item() == pytest.approx(4.0)
    # two points at squared distance 2: log exp(-2 * 2) = -4
    assert uniformity(x).item() == pytest.approx(-4.0)
    assert uniformity(torch.tensor([[1.0, 0.0], [2.0, 0.0]])).item() == pytest.approx(0.0)
