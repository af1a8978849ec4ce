"""Explain artifacts: the shared CIC space and cold items in embeddings.npz, both DIN attentions, text tokens."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from em3.evaluation.explain import write_embeddings, write_fusion_attention, write_ranker_attention
from em3.models.em3 import build_model
from tests.models.conftest import COLD, L, NUM_ITEMS, make_batch, make_config, make_samples, make_tokens

CPU = torch.device("cpu")


def _model(arm: str = "em3", **kw):
    torch.manual_seed(0)
    return build_model(make_config(arm, **kw), samples=make_samples(), tokens=make_tokens()).eval()


def _samples_with_rows():
    """make_samples plus the rows of make_batch (user, item, history), all in test."""
    b = make_batch()
    n = len(b["user"])
    return replace(make_samples(), user=b["user"].numpy(), item=b["item"].numpy(), label=b["label"].numpy(),
                   rating=np.full(n, np.nan, np.float32), timestamp=np.arange(n), history=b["history"].numpy(),
                   history_len=(b["history"] > 0).sum(1).numpy(), splits={"test": np.arange(n)})


def test_embeddings_hold_the_shared_space_and_each_items_id_row(tmp_path):
    model = _model()
    emb = np.load(write_embeddings(model, make_samples(), tmp_path / "embeddings.npz"))
    np.testing.assert_array_equal(emb["id_row"], make_samples().id_index)
    assert (emb["id_row"][list(COLD)] == 1).all() and emb["id_row"][0] == 0
    with torch.no_grad():
        want = F.normalize(model.cic_id_head(model.item_id_embeddings()), dim=-1).numpy()
    np.testing.assert_allclose(emb["id_aligned"], want, atol=1e-6)
    assert emb["content_aligned"].shape == emb["id_aligned"].shape == (NUM_ITEMS + 1, 16)


def test_embeddings_without_cic_heads_have_no_shared_space(tmp_path):
    emb = np.load(write_embeddings(_model("em3_no_cic"), make_samples(), tmp_path / "embeddings.npz"))
    assert "content_aligned" not in emb and "id_aligned" not in emb and "id_row" in emb


def test_ranker_attention_exports_id_and_content_weights_apart(tmp_path):
    model, samples = _model(), _samples_with_rows()
    rows = np.arange(len(samples.user))
    path = write_ranker_attention(model, samples, rows, device=CPU, path=tmp_path / "ranker_attention.npz")
    ra = np.load(path)
    with torch.no_grad():
        out = model({k: torch.as_tensor(v) for k, v in (("user", samples.user), ("item", samples.item),
                                                        ("history", samples.history), ("label", samples.label))})
    np.testing.assert_allclose(ra["weights"], out.history_attention.numpy(), atol=1e-6)
    np.testing.assert_allclose(ra["content_weights"], out.history_content_attention.numpy(), atol=1e-6)
    assert str(ra["weights_kind"]) == "id" and ra["content_weights"].shape == (len(rows), L)
    assert not np.allclose(ra["weights"], ra["content_weights"])


def test_ranker_attention_of_an_id_only_run_is_the_id_attention(tmp_path):
    samples = _samples_with_rows()
    path = write_ranker_attention(_model("id_only"), samples, np.arange(3), device=CPU, path=tmp_path / "r.npz")
    ra = np.load(path)
    assert str(ra["weights_kind"]) == "id" and "content_weights" not in ra


def _with_text_labels(tokens, labels):
    return replace(tokens, modalities={**tokens.modalities, "text": replace(tokens["text"], labels=labels)})


def test_token_labels_are_keyed_by_item_and_a_missing_row_fails_loudly(tmp_path):
    model = _model()
    tokens = _with_text_labels(make_tokens(), [[f"item{i}-w{j}" for j in range(2)] for i in range(NUM_ITEMS + 1)])
    write_fusion_attention(model, tokens, np.array([2, 7]), device=CPU, directory=tmp_path)
    want = {"2": ["item2-w0", "item2-w1"], "7": ["item7-w0", "item7-w1"]}
    assert json.loads((tmp_path / "token_labels.json").read_text()) == {"text": want}
    assert json.loads((tmp_path / "text_tokens.json").read_text()) == want       # the pre-registry name
    att = np.load(tmp_path / "fusion_attention.npz")
    assert att["modalities"].tolist() == ["image", "text"] and att["sizes"].tolist() == [4, 5]
    assert att["attention"].shape[-1] == 4 + 5 and int(att["Ti"]) == 4 and att["image_grid"].tolist() == [2, 2]
    short = _with_text_labels(tokens, tokens.text_tokens[:5])
    with pytest.raises(ValueError, match=r"tokens\['text'\].labels has 5 rows"):
        write_fusion_attention(model, short, np.array([2, 7]), device=CPU, directory=tmp_path)


def test_recommendation_users_prefer_users_with_test_positives():
    from em3.evaluation.explain import recommendation_users
    s = _samples_with_rows()
    s = replace(s, splits={"train": np.arange(len(s.user)), "test": np.flatnonzero(s.label > 0.5)[:1]})
    hit_user = int(s.user[s.splits["test"][0]])
    for seed in range(5):
        picked = recommendation_users(s, size=1, rng=np.random.default_rng(seed))
        assert picked.tolist() == [hit_user]
    assert len(recommendation_users(s, size=50, rng=np.random.default_rng(0))) == len(np.unique(s.user))


def test_write_all_reports_each_artifact_before_writing_it(tmp_path):
    seen = []
    s = replace(_samples_with_rows(), splits={"train": np.arange(8), "test": np.arange(8)})
    from em3.evaluation.explain import write_all
    write_all(_model(), s, make_tokens(), seed=0, k=3, device=CPU, directory=tmp_path, on_artifact=seen.append)
    assert seen == ["embeddings.npz", "fusion_attention.npz", "ranker_attention.npz", "recommendations.json"]
    assert {p.name for p in tmp_path.iterdir()} >= set(seen) | {"text_tokens.json"}
