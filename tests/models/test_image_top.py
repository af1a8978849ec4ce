"""encoder.image_top = trained: MobileNetV2's last block folded into one per-token layer, cached below it and
trained by the ranking loss (the "true end-to-end" image arm of issue 13).

A tiny random MobileNetV2 with random BatchNorm statistics stands in for the pretrained one (saved as a
local Hugging Face model, so the real loading path runs)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from em3.config import ConfigError, EncoderConfig
from em3.data.cache import ItemTokens, build_item_tokens, cache_key
from em3.data.schema import RawDataset
from em3.modalities.base import TokenTop
from em3.models.content import apply_top
from em3.models.em3 import build_model
from em3.models.image_encoder import fold_top, load_image_encoder
from em3.training.fit import compute_loss
from tests.models.conftest import NUM_ITEMS, TI, make_batch, make_config, make_samples, make_tokens
from tests.data.test_cache import fake_samples

SIZE = (64, 64)   # a 2x2 grid at MobileNetV2's stride 32


@pytest.fixture(scope="module")
def tiny_mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved random MobileNetV2 (0.35 width, 1280-d finegrained output) whose BatchNorms are not the identity."""
    from transformers import MobileNetV2Config, MobileNetV2ImageProcessor, MobileNetV2Model

    torch.manual_seed(0)
    model = MobileNetV2Model(MobileNetV2Config(depth_multiplier=0.35, image_size=SIZE[0], hidden_act="relu6",
                                               finegrained_output=True), add_pooling_layer=False)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("tiny-mobilenet")
    model.save_pretrained(path)
    MobileNetV2ImageProcessor().save_pretrained(path)
    return path


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (SIZE[0], SIZE[1], 3), dtype=np.uint8)) for _ in range(n)]


def test_the_folded_block_over_the_cached_input_is_the_frozen_encoders_output(tiny_mobilenet):
    full = load_image_encoder(str(tiny_mobilenet))
    below = load_image_encoder(str(tiny_mobilenet), before_top=True)
    top = fold_top(below.model, name="tiny")
    images = [*_images(3), None]
    want, mask = full.encode(images, size=SIZE)                                  # (4, 4, 1280)
    x, mask_below = below.encode(images, size=SIZE)                              # (4, 4, C_in)
    assert top.activation == "relu6" and top.weight.shape == (1280, x.shape[-1]) and x.shape[-1] < 1280
    got = apply_top(x, torch.from_numpy(top.weight), torch.from_numpy(top.bias), top.activation)
    assert torch.equal(mask, mask_below) and not mask[3].any()
    assert torch.allclose(got[:3], want[:3], atol=1e-4, rtol=1e-4)
    # the BatchNorm is really folded in: the bare convolution gives other tokens
    conv = below.model.conv_1x1.convolution.weight.detach()[:, :, 0, 0]
    bare = torch.nn.functional.relu6(x[:3] @ conv.T)
    assert (bare - want[:3]).abs().max() > 0.1


def test_the_scratch_encoder_has_no_block_to_train():
    with pytest.raises(ConfigError, match="image_top"):
        load_image_encoder("scratch", before_top=True)


def _raw() -> RawDataset:
    ids = (14, 10, 12, 11, 15, 13)
    items = pd.DataFrame({"item_id": ids, "title": [f"t{i}" for i in ids], "text": ["x"] * len(ids),
                          "image_path": [f"{i}.png" for i in ids]})
    pictures = dict(zip(ids, _images(len(ids))))
    inter = pd.DataFrame({"user_id": [1], "item_id": [10], "timestamp": [0], "rating": [5.0]})
    return RawDataset(name="top set", items=items, interactions=inter, users=None, attribute_columns=(),
                      load_image=lambda i: None if i == 12 else pictures[i], fingerprint="fp-top", image_size=SIZE)


def test_the_cache_holds_the_blocks_input_and_its_weights_under_another_key(tiny_mobilenet, tmp_path):
    frozen = EncoderConfig(image_encoder=str(tiny_mobilenet), text_encoder="scratch", cache_dir=str(tmp_path))
    trained = dataclasses.replace(frozen, image_top="trained")
    raw, samples = _raw(), fake_samples()
    assert "image_top" not in cache_key(raw, samples, frozen, "image")[1]       # old caches keep their keys
    a = build_item_tokens(raw, samples, frozen, modalities=("image",), progress=False)["image"]
    b = build_item_tokens(raw, samples, trained, modalities=("image",), progress=False)["image"]
    again = build_item_tokens(raw, samples, trained, modalities=("image",), progress=False)["image"]
    assert a.top is None and b.top is not None and again.top is not None
    assert np.array_equal(b.top.weight, again.top.weight) and b.top.activation == again.top.activation == "relu6"
    assert a.tokens.shape == (7, 4, 1280) and b.tokens.shape[:2] == (7, 4) and b.tokens.shape[2] < 1280
    assert np.array_equal(a.mask, b.mask) and a.missing == b.missing == 1
    x = torch.from_numpy(np.asarray(b.tokens, np.float32))
    rebuilt = apply_top(x, torch.from_numpy(b.top.weight), torch.from_numpy(b.top.bias), "relu6") * torch.from_numpy(b.mask)[..., None]
    assert torch.allclose(rebuilt, torch.from_numpy(np.asarray(a.tokens, np.float32)), atol=2e-2, rtol=1e-2)


def _with_image(store: ItemTokens, **changes) -> ItemTokens:
    mods = dict(store.modalities)
    mods["image"] = dataclasses.replace(mods["image"], **changes)
    return ItemTokens(mods)


def test_the_model_starts_at_the_frozen_block_and_the_ranking_loss_trains_it():
    rng = np.random.default_rng(3)
    base = make_tokens()
    c_in, c_out = 6, base["image"].tokens.shape[-1]
    below = rng.normal(size=(NUM_ITEMS + 1, TI, c_in)).astype(np.float16) * base["image"].mask[..., None]
    top = TokenTop(weight=rng.normal(size=(c_out, c_in)).astype(np.float32), bias=np.zeros(c_out, np.float32),
                   activation="relu")
    frozen_tokens = apply_top(torch.from_numpy(below.astype(np.float32)), torch.from_numpy(top.weight),
                              torch.from_numpy(top.bias), "relu").numpy().astype(np.float16)
    cfg = make_config("em3")
    torch.manual_seed(0)
    trained = build_model(cfg, samples=make_samples(), tokens=_with_image(base, tokens=below, top=top))
    torch.manual_seed(0)
    frozen = build_model(cfg, samples=make_samples(), tokens=_with_image(base, tokens=frozen_tokens))

    # at the start the trained-top model is the frozen one (the same draws, the block at its cached weights)
    want = frozen.item_content_embeddings()
    assert torch.allclose(trained.item_content_embeddings(), want, atol=2e-2 * float(want.abs().max()))
    names = dict(trained.named_parameters())
    assert "content.fusion.proj.image.top_weight" in names and "content.fusion.proj.image.top_weight" in trained.state_dict()
    content = {id(p) for p in trained.content_parameters()}
    assert id(names["content.fusion.proj.image.top_weight"]) in content

    # the ranking loss reaches the block, and a step moves it
    batch = make_batch()
    opt = torch.optim.SGD(trained.parameters(), lr=0.1)
    trained.train()
    compute_loss(trained(batch), batch["label"], cfg)[0].backward()
    grad = names["content.fusion.proj.image.top_weight"].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    before = names["content.fusion.proj.image.top_weight"].detach().clone()
    opt.step()
    assert not torch.equal(before, names["content.fusion.proj.image.top_weight"].detach())


def test_a_stale_cache_width_is_named():
    base = make_tokens()
    c_out = base["image"].tokens.shape[-1]
    top = TokenTop(weight=np.ones((c_out, 9), np.float32), bias=np.zeros(c_out, np.float32), activation="none")
    wrong = np.zeros((NUM_ITEMS + 1, TI, 5), np.float16)
    with pytest.raises(ConfigError, match="stale feature cache"):
        build_model(make_config("em3"), samples=make_samples(), tokens=_with_image(base, tokens=wrong, top=top))
