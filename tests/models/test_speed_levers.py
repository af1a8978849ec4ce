"""The exact speed levers (config `speed.*`) compute the same function as the plain code paths.

Each test builds two models from the same seed, one with the lever on and one with it off, and
compares logits (eval mode) and, where the lever touches the backward pass, gradients (dropout off).
"""
from __future__ import annotations

import pytest
import torch

from em3.models.attention_fold import _linear_map, pays
from em3.models.em3 import build_model
from em3.models.fusion import Attention
from em3.models.history import adapters_off
from em3.models.rankers import TargetAttention

ARMS_WITH_CONTENT = ("em3", "em3_frozen_history", "em3_shared_history", "em3_mean_fusion", "precomputed")
NO_DROPOUT = {"model__fusion__dropout": 0.0, "model__ranker__dropout": 0.0}


def _pair(config, samples, tokens, lever: str, arm: str = "em3", ranker: str = "din", **kw):
    models = []
    for on in (False, True):
        torch.manual_seed(0)
        cfg = config(arm, model__ranker__kind=ranker, **{f"speed__{lever}": on}, **kw)
        models.append(build_model(cfg, samples=samples, tokens=tokens))
    return models


def _grads(model, batch) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    out = model(batch)
    torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch["label"]).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lever", ["project_once", "queries_only_last_layer", "din_split_attention",
                                   "merge_lora_history", "fold_token_proj", "fold_attention", "din_table_keys",
                                   "shared_token_reads", "din_fused_unit", "din_pack_history"])
@pytest.mark.parametrize("arm", ["em3", "em3_frozen_history"])
def test_exact_levers_keep_logits_and_gradients(config, samples, tokens, batch, lever, arm):
    off, on = _pair(config, samples, tokens, lever, arm, **NO_DROPOUT)
    torch.testing.assert_close(on.eval()(batch).logits, off.eval()(batch).logits, rtol=1e-5, atol=1e-6)
    g_off, g_on = _grads(off, batch), _grads(on, batch)
    assert g_off.keys() == g_on.keys() and g_off
    for name in g_off:
        torch.testing.assert_close(g_on[name], g_off[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("arm,kw", [("em3_shared_history", {}), ("em3", {"speed__merge_lora_history": False}),
                                    ("em3", {"model__fusion__num_queries": 3, "model__fusion__num_heads": 4}),
                                    ("em3", {"model__history__lora_targets": ("q_proj", "token_proj")})])
def test_fold_token_proj_keeps_logits_and_gradients(config, samples, tokens, batch, arm, kw):
    """The fold reads raw tokens against per-(head, query) vectors: the same function and gradients, with the
    LoRA history path unmerged, a LoRA adapter on the folded projection itself, more queries and heads."""
    off, on = _pair(config, samples, tokens, "fold_token_proj", arm, **NO_DROPOUT, **kw)
    assert on.content.fusion.fold and not off.content.fusion.fold
    torch.testing.assert_close(on.eval()(batch).logits, off.eval()(batch).logits, rtol=1e-5, atol=1e-6)
    g_off, g_on = _grads(off, batch), _grads(on, batch)
    assert g_off.keys() == g_on.keys() and any("lora_" in n for n in g_on) == (arm == "em3")
    for name in g_off:
        torch.testing.assert_close(g_on[name], g_off[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("lever", ["fold_token_proj", "fold_attention", "shared_token_reads", "din_fused_unit",
                                   "din_pack_history"])
@pytest.mark.parametrize("arm", ["em3", "em3_frozen_history", "em3_shared_history"])
def test_folds_draw_the_same_dropout_masks(config, samples, tokens, batch, arm, lever):
    """In training, with dropout on (FastDropout's masks, which the fused DIN unit draws itself), the lever's
    model consumes the random stream as the plain one does: the same seed gives the same logits (so turning
    the lever on is not another seed)."""
    off, on = _pair(config, samples, tokens, lever, arm, speed__fast_dropout=True)
    logits = []
    for model in (off, on):
        torch.manual_seed(7)
        logits.append(model.train()(batch).logits)
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [{"model__fusion__num_layers": 2}, {"model__fusion__mode": "blip2"},
                                {"speed__queries_only_last_layer": False}, {"speed__prenorm_tokens": False}])
def test_fold_token_proj_stays_off_where_it_would_change_the_function(config, samples, tokens, kw):
    torch.manual_seed(0)
    model = build_model(config("em3", speed__fold_token_proj=True, **kw), samples=samples, tokens=tokens)
    assert not model.content.fusion.fold


@pytest.mark.parametrize("lever", ["fold_token_proj", "fold_attention"])
def test_folds_keep_attention_maps(config, samples, tokens, lever):
    """The Attention page's maps: the same with either fold on (fold_token_proj leaves them to the plain path,
    fold_attention returns its own weights)."""
    off, on = _pair(config, samples, tokens, lever)
    items = torch.arange(1, 6)
    (a_off, s_off), (a_on, s_on) = off.fusion_attention(items), on.fusion_attention(items)
    assert s_off == s_on and a_off
    for w_off, w_on in zip(a_off, a_on, strict=True):
        torch.testing.assert_close(w_on, w_off)


@pytest.mark.parametrize("arm,kw", [("em3_shared_history", {}), ("em3", {"speed__merge_lora_history": False}),
                                    ("em3", {"model__fusion__mode": "blip2"}),
                                    ("em3", {"model__fusion__num_layers": 2, "model__fusion__num_queries": 3}),
                                    ("em3", {"model__history__lora_targets": ("q_proj", "k_proj", "v_proj")})])
def test_fold_attention_keeps_logits_and_gradients(config, samples, tokens, batch, arm, kw):
    """The key/value projections folded into the queries: the same logits and gradients with the LoRA history
    path unmerged, adapters on k_proj and v_proj, BLIP-2's cross-attention, and two layers (the first computes
    every row, so only the last folds)."""
    off, on = _pair(config, samples, tokens, "fold_attention", arm, **NO_DROPOUT, **kw)
    attns = [m for m in on.content.fusion.modules() if isinstance(m, Attention)]
    assert attns and all(a.fold for a in attns)
    assert not any(m.fold for m in off.content.fusion.modules() if isinstance(m, Attention))
    torch.testing.assert_close(on.eval()(batch).logits, off.eval()(batch).logits, rtol=1e-5, atol=1e-6)
    g_off, g_on = _grads(off, batch), _grads(on, batch)
    assert g_off.keys() == g_on.keys() and any("lora_" in n for n in g_on) == (arm == "em3")
    for name in g_off:
        torch.testing.assert_close(g_on[name], g_off[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("arm,kw", [("id_only", {}), ("precomputed", {}), ("em3_shared_history", {}),
                                    ("em3", {"model__history__dedup": False}),
                                    ("em3", {"speed__project_once": False}),
                                    ("em3", {"model__history__cut_k": 2})])
def test_din_table_keys_keeps_logits_and_gradients(config, samples, tokens, batch, arm, kw):
    """DIN's key term per table row (the ID table; the unique history items' content, each history strategy's
    table): the same logits and gradients, with and without dedup, and under the history cut."""
    off, on = _pair(config, samples, tokens, "din_table_keys", arm, **NO_DROPOUT, **kw)
    assert on.table_keys and not off.table_keys
    torch.testing.assert_close(on.eval()(batch).logits, off.eval()(batch).logits, rtol=1e-5, atol=1e-6)
    g_off, g_on = _grads(off, batch), _grads(on, batch)
    assert g_off.keys() == g_on.keys() and g_off
    for name in g_off:
        torch.testing.assert_close(g_on[name], g_off[name], rtol=1e-4, atol=1e-6, msg=name)


def test_fold_attention_runs_only_where_it_pays_and_is_linear(config, samples, tokens):
    """Folded only for few queries (h·Q < D) over linear k/v maps: a layer computing every row, or a LoRA
    adapter with dropout on k_proj, takes the plain path."""
    torch.manual_seed(0)
    model = build_model(config("em3", model__history__lora_targets=("k_proj",), model__history__lora_dropout=0.1),
                        samples=samples, tokens=tokens)
    attn = model.content.fusion.layers[0].attn
    assert attn.fold and not pays(attn, 81)        # every row of [queries; tokens] as a query
    with adapters_off(model.content.fusion):
        assert pays(attn, 2)                       # the target path: the adapter is off, k_proj is linear
    assert not _linear_map(attn.k_proj)            # the history path: dropout on the adapter's input


def test_queries_only_last_layer_keeps_attention_maps(config, samples, tokens):
    off, on = _pair(config, samples, tokens, "queries_only_last_layer", model__fusion__num_layers=2)
    items = torch.arange(1, 6)
    (a_off, s_off), (a_on, s_on) = off.fusion_attention(items), on.fusion_attention(items)
    assert s_off == s_on and a_off
    for w_off, w_on in zip(a_off, a_on, strict=True):
        torch.testing.assert_close(w_on, w_off)


def test_split_attention_unit_equals_the_concatenated_form():
    torch.manual_seed(0)
    unit = TargetAttention(6, hidden=(5, 4), dropout=0.0).eval()
    q, k = torch.randn(3, 6), torch.randn(3, 7, 6)
    mask = torch.rand(3, 7) > 0.3
    mask[0] = False                                                   # an empty history
    plain = unit(q, k, mask)
    unit.split = True
    split = unit(q, k, mask)
    for a, b in zip(plain, split):
        torch.testing.assert_close(a, b)
    assert (split[1][0] == 0).all() and (split[1][~mask] == 0).all()


def test_pairwise_interest_equals_forward_on_every_pair():
    torch.manual_seed(1)
    unit = TargetAttention(4, hidden=(8,), dropout=0.0).eval()
    cands, hist = torch.randn(5, 4), torch.randn(2, 6, 4)
    mask = torch.rand(2, 6) > 0.4
    got = unit.pairwise(cands, hist, mask)                              # (2, 5, 4)
    for b in range(2):
        want, _ = unit(cands, hist[b].expand(5, -1, -1), mask[b].expand(5, -1))
        torch.testing.assert_close(got[b], want)


@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
@pytest.mark.parametrize("arm", ["id_only", *ARMS_WITH_CONTENT])
def test_eval_item_cache_and_catalogue_scoring_match_per_batch_encoding(config, samples, tokens, batch, arm, ranker):
    torch.manual_seed(0)
    model = build_model(config(arm, model__ranker__kind=ranker), samples=samples, tokens=tokens).eval()
    catalogue = model.catalogue()
    assert (catalogue is None) == (arm == "id_only")
    plain = model(batch).logits
    torch.testing.assert_close(model(batch, catalogue=catalogue).logits if catalogue else plain, plain)
    # every (user, item) pair at once == the model's forward on each pair
    scores = model.score_catalogue(batch["user"], batch["history"], catalogue)            # (B, I)
    assert scores.shape == (len(batch["user"]), samples.num_items)
    for item in (1, 5, samples.num_items):
        rows = {**batch, "item": torch.full_like(batch["item"], item)}
        torch.testing.assert_close(scores[:, item - 1], model(rows).logits, rtol=1e-5, atol=1e-5)


def _with_trained_adapters(model):
    torch.manual_seed(1)                          # the same adapters in every model built from one seed
    for name, p in model.named_parameters():      # adapters start at B = 0: give them a non-zero update
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    return model


def test_merged_lora_matches_the_adapter_path_once_the_adapters_are_trained(config, samples, tokens, batch):
    off, on = (_with_trained_adapters(m) for m in _pair(config, samples, tokens, "merge_lora_history", **NO_DROPOUT))
    h_off = off.eval().content(batch["item"], batch["history"])[1]
    torch.testing.assert_close(on.eval().content(batch["item"], batch["history"])[1], h_off, rtol=1e-5, atol=1e-6)
    g_off, g_on = _grads(off, batch), _grads(on, batch)
    adapters = [n for n in g_off if "lora_" in n]
    assert adapters and all(g_off[n].abs().sum() > 0 for n in adapters)
    for name in g_off:
        torch.testing.assert_close(g_on[name], g_off[name], rtol=1e-4, atol=1e-6, msg=name)
    # with dropout on the adapter's input the merge would not be exact: the lever then stands down
    cfg = config("em3", model__history__lora_dropout=0.1)
    assert not build_model(cfg, samples=samples, tokens=tokens).content.merge_lora


def test_lora_catalogue_history_path_uses_the_adapters(config, samples, tokens):
    torch.manual_seed(0)
    model = _with_trained_adapters(build_model(config("em3"), samples=samples, tokens=tokens))
    catalogue = model.catalogue()
    assert not torch.allclose(catalogue.target[1:], catalogue.history[1:])
    assert (catalogue.target[0] == 0).all() and (catalogue.history[0] == 0).all()


def test_prenorm_tokens_start_as_the_same_model(config, samples, tokens, batch):
    off, on = _pair(config, samples, tokens, "prenorm_tokens")
    # at init the LayerNorm affine is the identity, so folding it into the projection changes nothing
    torch.testing.assert_close(on.eval()(batch).logits, off.eval()(batch).logits, rtol=1e-3, atol=1e-4)
    assert sum(p.numel() for p in on.parameters()) < sum(p.numel() for p in off.parameters())


def test_bf16_token_path_is_close_to_fp32(config, samples, tokens, batch):
    torch.manual_seed(0)
    fp32 = build_model(config("em3"), samples=samples, tokens=tokens).eval()
    torch.manual_seed(0)
    bf16 = build_model(config("em3", speed__compute_dtype="bf16"), samples=samples, tokens=tokens).eval()
    a, b = fp32(batch).logits, bf16(batch).logits
    assert b.dtype == torch.float32
    torch.testing.assert_close(b, a, rtol=0.05, atol=0.02)


@pytest.mark.parametrize("kw", [{}, {"model__history__strategy": "shared"}, {"model__history__strategy": "frozen"},
                                {"model__history__lora_targets": ("out_proj", "token_proj")},
                                {"speed__compute_dtype": "bf16"}])
def test_pool_mean_tokens_keeps_mean_fusions_logits_and_gradients(config, samples, tokens, batch, kw):
    """Mean fusion projects a masked mean of linear maps: with the mean taken once in the store, the same
    logits and gradients, through every history strategy, a LoRA adapter on the projection, and bf16."""
    off, on = _pair(config, samples, tokens, "pool_mean_tokens", "em3_mean_fusion", **NO_DROPOUT, **kw)
    assert on.content.store.image_tokens.shape[1] == on.content.store.text_tokens.shape[1] == 1
    assert off.content.store.text_tokens.shape[1] > 1
    tol = dict(rtol=2e-2, atol=2e-3) if kw.get("speed__compute_dtype") == "bf16" else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(on.eval()(batch).logits, off.eval()(batch).logits, **tol)
    g_off, g_on = _grads(off, batch), _grads(on, batch)
    assert g_off.keys() == g_on.keys() and g_off
    for name in g_off:
        torch.testing.assert_close(g_on[name], g_off[name], **({"rtol": 1e-4, "atol": 1e-6} if not kw.get(
            "speed__compute_dtype") else {"rtol": 5e-2, "atol": 5e-3}), msg=name)


def test_pool_mean_tokens_draws_the_same_dropout_and_keeps_empty_modalities_zero(config, samples, tokens, batch):
    off, on = _pair(config, samples, tokens, "pool_mean_tokens", "em3_mean_fusion")     # dropout on
    torch.manual_seed(3)
    g_off = _grads(off, batch)
    torch.manual_seed(3)
    g_on = _grads(on, batch)
    for name in g_off:
        torch.testing.assert_close(g_on[name], g_off[name], rtol=1e-4, atol=1e-6, msg=name)
    masked = ~off.content.store.image_mask.any(dim=1)                                  # items without an image
    assert (on.content.store.image_mask[:, 0] == ~masked).all()
    assert (on.content.store.image_tokens[masked] == 0).all()


@pytest.mark.parametrize("arm,kw", [("em3", {}), ("em3_mean_fusion", {"speed__prenorm_tokens": False}),
                                    ("em3_mean_fusion", {"model__history__lora_targets": ("token_proj",),
                                                         "model__history__lora_dropout": 0.1})])
def test_pool_mean_tokens_stands_down_where_it_would_change_the_function(config, samples, tokens, arm, kw):
    torch.manual_seed(0)
    model = build_model(config(arm, speed__pool_mean_tokens=True, **kw), samples=samples, tokens=tokens)
    assert model.content.store.text_tokens.shape[1] > 1
