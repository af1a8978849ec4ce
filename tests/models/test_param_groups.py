"""EM3Model.param_groups: which parameters get which learning rate, by name.

The decision (docstring and code agree): lr_content is for the content module — every parameter
under `content.` (Fusion-Q-Former, modality projections, LoRA adapters). Both CIC projection heads
are fresh linear layers trained by the CIC loss, like the ranker, so they get lr_ranker with the
ID / user tables and the ranker.
"""
from __future__ import annotations

import pytest
import torch

from em3.models.em3 import build_model


def _named_groups(model, **lrs) -> dict[str, tuple[float, set[str]]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: (g["lr"], {names[id(p)] for p in g["params"]}) for g in model.param_groups(**lrs)}


@pytest.mark.parametrize("arm", ["em3", "em3_shared_history", "em3_frozen_history"])
def test_content_module_gets_lr_content_and_everything_else_incl_both_cic_heads_lr_ranker(config, samples, tokens,
                                                                                          arm):
    torch.manual_seed(0)
    model = build_model(config(arm), samples=samples, tokens=tokens)
    groups = _named_groups(model, lr_content=1e-4, lr_ranker=3e-3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lr_content, content = groups["content"]
    lr_ranker, ranker = groups["ranker"]
    assert (lr_content, lr_ranker) == (1e-4, 3e-3)
    assert content == {n for n in trainable if n.startswith("content.")}
    assert ranker == trainable - content
    assert {"cic_content_head.weight", "cic_content_head.bias", "cic_id_head.weight", "cic_id_head.bias",
            "user_emb.weight", "item_id_emb.weight"} <= ranker
    assert all(n.startswith(("ranker.", "cic_", "user_emb.", "item_id_emb.")) for n in ranker)
    assert "content.fusion.queries" in content
    if arm == "em3":
        assert any(".lora_A." in n for n in content) and not any("lora_" in n for n in ranker)


def test_id_only_has_only_the_ranker_group(config, samples):
    torch.manual_seed(0)
    model = build_model(config("id_only"), samples=samples, tokens=None)
    groups = _named_groups(model, lr_content=1e-4, lr_ranker=3e-3)
    assert list(groups) == ["ranker"] and groups["ranker"][0] == 3e-3
    assert groups["ranker"][1] == {n for n, _ in model.named_parameters()}
