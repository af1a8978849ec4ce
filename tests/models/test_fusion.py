"""Fusion-Q-Former: shapes per mode, masking, missing modalities, per-modality normalisation."""
from __future__ import annotations

import pytest
import torch

from em3.config import FusionConfig
from em3.models.fusion import FusionQFormer

N, TI, CI, TT, CT = 3, 4, 10, 5, 7


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(N, TI, CI, generator=g) * 10
    text = torch.randn(N, TT, CT, generator=g)
    image_mask = torch.ones(N, TI, dtype=torch.bool)
    text_mask = torch.ones(N, TT, dtype=torch.bool)
    text_mask[0, 3:] = False          # item 0: two padded text tokens
    image_mask[1] = False             # item 1: no image
    image_mask[2], text_mask[2] = False, False   # item 2: nothing at all
    return image, image_mask, text, text_mask


def _d(image, image_mask, text, text_mask) -> dict:
    return {"image": (image, image_mask), "text": (text, text_mask)}


def _fusion(mode: str, **kw) -> FusionQFormer:
    torch.manual_seed(0)
    cfg = FusionConfig(mode=mode, dim=16, num_heads=2, num_queries=2, num_layers=2, dropout=0.0, **kw)
    return FusionQFormer(cfg, dims={"image": CI, "text": CT}).eval()


@pytest.mark.parametrize("mode", ["selfattn", "blip2", "mean"])
def test_shapes_and_finite_for_missing_modalities(mode):
    out = _fusion(mode)(_d(*_inputs()), return_attention=True)
    assert out.embedding.shape == (N, 16)
    assert torch.isfinite(out.embedding).all()   # incl. the item without image and the empty item
    if mode == "mean":
        assert out.attention == []
    else:
        assert len(out.attention) == 2
        assert all(w.shape == (N, 2, 2, TI + TT) for w in out.attention)


@pytest.mark.parametrize("mode", ["selfattn", "blip2"])
def test_padded_and_missing_tokens_get_exactly_zero_attention(mode):
    image, image_mask, text, text_mask = _inputs()
    attention = _fusion(mode)(_d(image, image_mask, text, text_mask), return_attention=True).attention
    for w in attention:                                     # (N, h, Nq, Ti+Tt)
        assert (w[0, :, :, TI + 3:] == 0).all()             # padded text tokens
        assert (w[1, :, :, :TI] == 0).all()                 # the missing image
        assert (w[2] == 0).all()                            # the item with no tokens
        assert (w[0, :, :, :TI + 3] > 0).all()              # real tokens do get weight
    if mode == "blip2":                                     # cross-attention: rows over real tokens sum to 1
        torch.testing.assert_close(attention[0][0].sum(-1), torch.ones(2, 2))


@pytest.mark.parametrize("mode", ["selfattn", "blip2", "mean"])
def test_padding_content_does_not_change_the_embedding(mode):
    image, image_mask, text, text_mask = _inputs()
    fusion = _fusion(mode)
    before = fusion(_d(image, image_mask, text, text_mask)).embedding
    text2, image2 = text.clone(), image.clone()
    text2[0, 3:] = 99.0
    image2[1] = -50.0
    after = fusion(_d(image2, image_mask, text2, text_mask)).embedding
    torch.testing.assert_close(before, after)


def test_attention_and_fast_paths_agree():
    fusion = _fusion("selfattn")
    fast = fusion(_d(*_inputs())).embedding
    slow = fusion(_d(*_inputs()), return_attention=True).embedding
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_per_modality_normalisation_removes_raw_scale():
    image, image_mask, text, text_mask = _inputs()
    fusion = _fusion("selfattn")
    a = fusion(_d(image, image_mask, text, text_mask)).embedding
    b = fusion(_d(image * 10, image_mask, text * 0.1, text_mask)).embedding
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_single_modality_ignores_the_other_and_reports_its_columns():
    image, image_mask, text, text_mask = _inputs()
    fusion = _fusion("selfattn", modalities=("text",))
    assert set(fusion.proj) == {"text"}
    out = fusion(_d(image, image_mask, text, text_mask), return_attention=True)
    other = fusion(_d(torch.randn_like(image), image_mask, text, text_mask)).embedding
    torch.testing.assert_close(out.embedding, other)
    assert out.attention[0].shape[-1] == TT and out.segments == (("text", TT),)


def test_three_modalities_fuse_in_registry_order_and_a_missing_one_still_embeds():
    image, image_mask, text, text_mask = _inputs()
    tab = torch.randn(N, 3, 6)
    tab_mask = torch.ones(N, 3, dtype=torch.bool)
    tab_mask[0] = False                                   # item 0 lacks the tabular modality
    torch.manual_seed(0)
    cfg = FusionConfig(mode="selfattn", dim=16, num_heads=2, num_queries=2, num_layers=1, dropout=0.0,
                       modalities=("tabular", "image", "text"))
    fusion = FusionQFormer(cfg, dims={"image": CI, "text": CT, "tabular": 6}).eval()
    inputs = {**_d(image, image_mask, text, text_mask), "tabular": (tab, tab_mask)}
    out = fusion(inputs, return_attention=True)
    assert out.segments == (("image", TI), ("text", TT), ("tabular", 3))
    assert out.attention[0].shape[-1] == TI + TT + 3 and (out.attention[0][0, ..., TI + TT:] == 0).all()
    changed = fusion({**inputs, "tabular": (tab * 0 + 7.0, tab_mask)}).embedding
    assert torch.isfinite(out.embedding).all()
    torch.testing.assert_close(changed[0], out.embedding[0])   # masked: its values do not matter
    assert not torch.allclose(changed[1], out.embedding[1])    # real: they do


def test_a_fused_modality_without_tokens_is_refused_by_name():
    cfg = FusionConfig(modalities=("image", "audio"))
    with pytest.raises(ValueError, match="audio"):
        FusionQFormer(cfg, dims={"image": CI, "text": CT})


def test_lora_target_names_exist_per_mode():
    names = lambda mode: {n.rsplit(".", 1)[-1] for n, m in _fusion(mode).named_modules()
                          if isinstance(m, torch.nn.Linear)}
    assert {"q_proj", "k_proj", "v_proj", "out_proj", "token_proj"} <= names("selfattn")
    assert {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "token_proj"} <= names("blip2")
    assert names("mean") == {"token_proj", "out_proj"}
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in _fusion("blip2").modules())


def test_queries_are_learnable_and_used():
    fusion = _fusion("selfattn")
    assert fusion.queries.shape == (2, 16) and fusion.queries.requires_grad
    fusion(_d(*_inputs())).embedding.sum().backward()
    assert fusion.queries.grad is not None and fusion.queries.grad.abs().sum() > 0
