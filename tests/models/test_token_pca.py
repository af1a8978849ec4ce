"""speed.token_pca: the token store keeps each wide modality's top-k principal components of its real tokens.

Exact where the real tokens span at most k directions (the coordinates rebuild them), padding stays zero,
the fit is deterministic, the model's projection reads k values a token, and the config refuses it without
prenormed tokens."""
from __future__ import annotations

import pytest
import torch

from em3.config import ConfigError
from em3.models.content import pca_reduce
from em3.models.em3 import build_model


def _low_rank(n: int = 40, t: int = 6, c: int = 32, rank: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, c, generator=g)
    x = torch.randn(n, t, rank, generator=g) @ basis + torch.randn(c, generator=g)     # rank-5 plus an offset
    mask = torch.rand(n, t, generator=g) > 0.3
    return (x * mask[..., None]).float(), mask


def test_k_components_rebuild_tokens_that_span_k_directions_and_padding_stays_zero():
    x, mask = _low_rank()
    z = pca_reduce(x, mask, k=5)
    assert z.shape == (40, 6, 5) and torch.all(z[~mask] == 0)
    # The coordinates are an isometry of the centred real tokens: pairwise distances are kept.
    real_x, real_z = x[mask].double(), z[mask].double()
    torch.testing.assert_close(torch.cdist(real_z, real_z), torch.cdist(real_x, real_x), rtol=1e-4, atol=1e-4)
    # With fewer components the distances shrink (information is lost), never grow.
    z2 = pca_reduce(x, mask, k=2)[mask].double()
    assert torch.all(torch.cdist(z2, z2) <= torch.cdist(real_x, real_x) + 1e-4)
    assert torch.equal(pca_reduce(x, mask, k=5), z)                                 # deterministic


def test_the_model_projects_k_values_a_token(config, samples, tokens, batch):
    model = build_model(config("em3", speed__token_pca=8), samples=samples, tokens=tokens)
    wide = {m: d for m, d in model.content.store.dims.items()}
    assert wide and all(d <= 8 for d in wide.values())
    assert all(model.content.fusion.proj[m].token_proj.in_features == wide[m] for m in wide)
    out = model.train()(batch)
    torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch["label"]).backward()
    assert model.content.fusion.proj[next(iter(wide))].token_proj.weight.grad.abs().sum() > 0


def test_token_pca_needs_prenormed_tokens(config):
    with pytest.raises(ConfigError, match="speed.token_pca"):
        config("em3", speed__token_pca=8, speed__prenorm_tokens=False)
    with pytest.raises(ConfigError, match="speed.token_pca"):
        config("em3", speed__token_pca=-1)
