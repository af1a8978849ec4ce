"""Explain artifacts for the dashboard: item embeddings, fusion attention, ranker attention, recommendations.

Each writer saves one file under a directory that run.py logs as the `explain/` artifact
folder (formats: docs/ARCHITECTURE.md, MLflow conventions). Samples are seeded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from em3.data.schema import SampleSet
from em3.evaluation.recommend import recommend
from em3.training.batches import to_batch

FUSION_SAMPLE = 32        # items whose Fusion-Q-Former attention is exported
RANKER_SAMPLE = 32        # (user, target) pairs whose DIN attention is exported
RECOMMEND_SAMPLE = 50     # users whose top-K is exported


@torch.no_grad()
def write_embeddings(model: nn.Module, samples: SampleSet, path: Path) -> Path:
    """embeddings.npz: item_index (I+1,), content (I+1, D) (width 0 without content), id (I+1, id_dim), id_row (I+1,).

    id_row is each item's row of the ID table (0 padding, 1 the unknown ID every cold item shares).
    With CIC heads it also holds content_aligned / id_aligned (I+1, D): both through their
    projection head and L2-normalised — the shared space in which CIC pulls the pairs together,
    and the only one in which a content vector and an ID vector can be compared.
    """
    model.eval()
    id_t = model.item_id_embeddings().float()                              # (I+1, id_dim)
    content_t = model.item_content_embeddings().float()                    # (I+1, D); (I+1, 0) without content
    arrays = {"item_index": np.arange(samples.num_items + 1), "content": content_t.cpu().numpy(),
              "id": id_t.cpu().numpy(), "id_row": np.asarray(samples.id_index, dtype=np.int64)}
    heads = (getattr(model, "cic_content_head", None), getattr(model, "cic_id_head", None))
    if content_t.shape[1] > 0 and all(h is not None for h in heads):
        device = next(heads[0].parameters()).device
        arrays["content_aligned"] = F.normalize(heads[0](content_t.to(device)), dim=-1).cpu().numpy()
        arrays["id_aligned"] = F.normalize(heads[1](id_t.to(device)), dim=-1).cpu().numpy()
    np.savez_compressed(path, **arrays)
    return path


@torch.no_grad()
def item_token_mask(tokens, items: np.ndarray, segments) -> np.ndarray:
    """(n, T) True where item i's fused token t is real (not padding, not a missing image), in the attention's
    column order: the store's masks of each (modality, T_m) segment, side by side."""
    parts = [np.asarray(tokens[m].mask[np.asarray(items, dtype=np.int64)], dtype=bool) for m, _ in segments]
    for (m, t), part in zip(segments, parts):
        if part.shape[1] != t:
            raise ValueError(f"tokens[{m!r}].mask has {part.shape[1]} slots, the attention's {m} segment {t}")
    return np.concatenate(parts, axis=1)


def write_fusion_attention(model: nn.Module, tokens, items: np.ndarray, *, device: torch.device,
                           directory: Path) -> list[Path]:
    """fusion_attention.npz + token_labels.json (+ text_tokens.json when text is fused).

    The npz holds items, attention (n, layers, heads, Nq, T) over the fused tokens (float16: tiny weights of a
    peaked query read 0), token_mask (n, T) of the real tokens, `modalities` and `sizes` (the T_m of each
    column segment, in order), and for an image segment image_grid and Ti (its size; 0 without image). token_labels.json maps modality -> item index -> that item's own token labels;
    an item a label list lacks is a ValueError (a silent gap would let the page show another item's words).
    """
    model.eval()
    layers, segments = model.fusion_attention(torch.as_tensor(items, device=device))   # per layer (n, heads, Nq, T)
    names = [m for m, _ in segments]
    for m in names:
        rows = len(tokens[m].labels)
        missing = [int(i) for i in items if not 0 <= int(i) < rows]
        if missing:
            raise ValueError(f"tokens[{m!r}].labels has {rows} rows; no token labels for item indices "
                             f"{missing[:5]} (expected one row per item index, row 0 = padding)")
    attention = torch.stack([a.float() for a in layers], dim=1).cpu().numpy()      # (n, layers, heads, Nq, T)
    path = directory / "fusion_attention.npz"
    sizes = dict(segments)
    extra = {"image_grid": np.asarray(tokens["image"].grid)} if "image" in sizes else {}
    token_mask = item_token_mask(tokens, items, segments)                                     # (n, T)
    np.savez_compressed(path, items=items, attention=attention.astype(np.float16), modalities=np.asarray(names),
                        sizes=np.asarray([t for _, t in segments]), Ti=np.asarray(sizes.get("image", 0)),
                        token_mask=token_mask, **extra)
    labels = {m: {str(int(i)): list(tokens[m].labels[int(i)]) for i in items} for m in names
              if any(tokens[m].labels[int(i)] for i in items)}
    lpath = directory / "token_labels.json"
    lpath.write_text(json.dumps(labels))
    out = [path, lpath]
    if "text" in labels:   # the pre-registry name of the text labels (older pages and tools read it)
        tpath = directory / "text_tokens.json"
        tpath.write_text(json.dumps(labels["text"]))
        out.append(tpath)
    return out


@torch.no_grad()
def write_ranker_attention(model: nn.Module, samples: SampleSet, rows: np.ndarray, *, device: torch.device,
                           path: Path) -> Path | None:
    """ranker_attention.npz (user, target, history, weights (n, L), weights_kind [, content_weights (n, L)]).

    DIN attends over the history twice: `weights` is its ID attention and `content_weights` its
    content attention (content arms). weights_kind says what `weights` is: "id", or "mean" (the
    mean of both) for a model that reports only that. None when the ranker has no attention (DCN-v2).
    """
    model.eval()
    batch = to_batch(samples, rows, device)
    out = model(batch)
    weights = out.history_attention
    if weights is None:
        return None
    content = getattr(out, "history_content_attention", None)
    has_content = bool(getattr(model, "has_content", False))
    arrays = {"user": samples.user[rows], "target": samples.item[rows], "history": samples.history[rows],
              "weights": weights.float().cpu().numpy(),
              "weights_kind": np.asarray("id" if content is not None or not has_content else "mean")}
    if content is not None:
        arrays["content_weights"] = content.float().cpu().numpy()
    np.savez_compressed(path, **arrays)
    return path


def recommendation_users(samples: SampleSet, *, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted user indices whose top-K is exported: users with a test positive (can have hits) first, then the rest."""
    users = np.unique(samples.user[samples.splits["train"]])
    test = samples.splits.get("test", np.zeros(0, dtype=np.int64))
    with_hits = np.intersect1d(users, samples.user[test[samples.label[test] > 0.5]])
    rest = np.setdiff1d(users, with_hits)
    picked = rng.choice(with_hits, size=min(size, len(with_hits)), replace=False)
    more = rng.choice(rest, size=min(size - len(picked), len(rest)), replace=False)
    return np.sort(np.r_[picked, more]).astype(np.int64)


def write_all(model: nn.Module, samples: SampleSet, tokens, *, seed: int, k: int, device: torch.device,
              directory: Path, on_artifact: Callable[[str], None] | None = None) -> Path:
    """Write every explain artifact into directory; returns it.

    `on_artifact(name)` is called before each artifact is written (progress; a cancel hook may raise there).
    """
    step = on_artifact or (lambda name: None)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    step("embeddings.npz")
    write_embeddings(model, samples, directory / "embeddings.npz")
    if tokens is not None and hasattr(model, "fusion_attention"):
        items = np.sort(rng.choice(np.arange(1, samples.num_items + 1), size=min(FUSION_SAMPLE, samples.num_items),
                                   replace=False))
        if model.fusion_attention(torch.as_tensor(items[:1], device=device))[0]:   # [] for mean / precomputed arms
            step("fusion_attention.npz")
            write_fusion_attention(model, tokens, items, device=device, directory=directory)
    pool = samples.splits.get("test", np.zeros(0, dtype=np.int64))
    pool = pool[samples.history_len[pool] > 0] if len(pool) else pool
    if len(pool):
        rows = np.sort(rng.choice(pool, size=min(RANKER_SAMPLE, len(pool)), replace=False))
        step("ranker_attention.npz")
        write_ranker_attention(model, samples, rows, device=device, path=directory / "ranker_attention.npz")
    users = recommendation_users(samples, size=RECOMMEND_SAMPLE, rng=rng)
    step("recommendations.json")
    recs = recommend(model, samples, users, k=k, device=device)
    (directory / "recommendations.json").write_text(json.dumps(recs))
    return directory
