"""The end-of-run CIC metrics: they tell an aligned space from an unaligned one, and skip cold items."""
from __future__ import annotations

import numpy as np
import pytest

from em3.evaluation.alignment import cic_space_metrics


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _export(content, ids, id_row):
    return {"content_aligned": content, "id_aligned": ids, "id_row": np.asarray(id_row),
            "content": content, "id": ids, "item_index": np.arange(len(content))}


def test_aligned_pairs_score_as_aligned_and_random_ones_do_not():
    rng = np.random.default_rng(0)
    n, d = 200, 16
    ids = _unit(rng.normal(size=(n, d)))
    rows = np.r_[0, np.arange(2, n + 1)]                                   # row 0 padding, no cold item
    same = cic_space_metrics(_export(ids.copy(), ids, rows))
    other = cic_space_metrics(_export(_unit(rng.normal(size=(n, d))), ids, rows))
    assert same["align/catalogue_alignment"] == pytest.approx(0.0, abs=1e-9)
    assert same["align/matched_cosine"] == pytest.approx(1.0) and same["align/top1_content_to_id"] == 1.0
    assert other["align/catalogue_alignment"] == pytest.approx(2.0, abs=0.2)       # orthogonal on average
    assert abs(other["align/matched_cosine"]) < 0.1 and other["align/top1_content_to_id"] < 0.05
    assert same["align/warm_items"] == n - 1 and same["align/top1_chance"] == pytest.approx(1 / (n - 1))
    # spread-out random unit vectors in 16-d: uniformity well below 0; a collapsed side: 0
    assert same["align/catalogue_uniformity_id"] < -2.5
    collapsed = cic_space_metrics(_export(np.tile(ids[:1], (n, 1)), ids, rows))
    assert collapsed["align/catalogue_uniformity_content"] == pytest.approx(0.0, abs=1e-6)
    assert collapsed["align/mean_cosine_content"] == pytest.approx(1.0)


def test_cold_items_are_left_out_and_runs_without_heads_get_nothing():
    rng = np.random.default_rng(1)
    ids = _unit(rng.normal(size=(10, 4)))
    content = ids.copy()
    content[5:] = _unit(rng.normal(size=(5, 4)))                          # the cold rows' content is unrelated
    id_row = np.array([0, 2, 3, 4, 5, 1, 1, 1, 1, 1])                     # rows 5.. share the unknown ID (row 1)
    m = cic_space_metrics(_export(content, ids, id_row))
    assert m["align/warm_items"] == 4 and m["align/catalogue_alignment"] == pytest.approx(0.0, abs=1e-9)
    assert cic_space_metrics({"content": content, "id": ids, "id_row": id_row}) == {}
