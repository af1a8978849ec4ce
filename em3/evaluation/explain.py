"""Explain artifacts for the dashboard: item embeddings, fusion attention, ranker attention, recommendations.

Each writer saves one file under a directory that run.py logs as the `explain/` artifact
folder (formats: docs/ARCHITECTURE.md, MLflow conventions). Samples are seeded.
"""
from __future__ import annotations

import json
from pathlib import Path

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
    """embeddings.npz: item_index (I+1,), content (I+1, D) (width 0 without content), id (I+1, id_dim).

    With CIC heads it also holds content_aligned / id_aligned (I+1, D): both through their
    projection head and L2-normalised — the shared space in which CIC pulls the pairs together.
    """
    model.eval()
    id_t = model.item_id_embeddings().float()                              # (I+1, id_dim)
    content_t = model.item_content_embeddings().float()                    # (I+1, D); (I+1, 0) without content
    arrays = {"item_index": np.arange(samples.num_items + 1), "content": content_t.cpu().numpy(),
              "id": id_t.cpu().numpy()}
    heads = (getattr(model, "cic_content_head", None), getattr(model, "cic_id_head", None))
    if content_t.shape[1] > 0 and all(h is not None for h in heads):
        device = next(heads[0].parameters()).device
        arrays["content_aligned"] = F.normalize(heads[0](content_t.to(device)), dim=-1).cpu().numpy()
        arrays["id_aligned"] = F.normalize(heads[1](id_t.to(device)), dim=-1).cpu().numpy()
    np.savez_compressed(path, **arrays)
    return path


@torch.no_grad()
def write_fusion_attention(model: nn.Module, tokens, items: np.ndarray, *, device: torch.device,
                           directory: Path) -> list[Path]:
    """fusion_attention.npz (items, attention (n, layers, heads, Nq, Ti+Tt), image_grid, Ti) + text_tokens.json."""
    model.eval()
    layers = model.fusion_attention(torch.as_tensor(items, device=device))        # per layer (n, heads, Nq, T)
    attention = torch.stack([a.float() for a in layers], dim=1).cpu().numpy()      # (n, layers, heads, Nq, T)
    path = directory / "fusion_attention.npz"
    np.savez_compressed(path, items=items, attention=attention.astype(np.float16),
                        image_grid=np.asarray(tokens.image_grid), Ti=np.asarray(tokens.image.shape[1]))
    text = {str(int(i)): list(tokens.text_tokens[int(i)]) for i in items if int(i) < len(tokens.text_tokens)}
    tpath = directory / "text_tokens.json"
    tpath.write_text(json.dumps(text))
    return [path, tpath]


@torch.no_grad()
def write_ranker_attention(model: nn.Module, samples: SampleSet, rows: np.ndarray, *, device: torch.device,
                           path: Path) -> Path | None:
    """ranker_attention.npz (user, target, history, weights (n, L)); None when the ranker has no attention."""
    model.eval()
    batch = to_batch(samples, rows, device)
    weights = model(batch).history_attention
    if weights is None:
        return None
    np.savez_compressed(path, user=samples.user[rows], target=samples.item[rows], history=samples.history[rows],
                        weights=weights.float().cpu().numpy())
    return path


def write_all(model: nn.Module, samples: SampleSet, tokens, *, seed: int, k: int, device: torch.device,
              directory: Path) -> Path:
    """Write every explain artifact into directory; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    write_embeddings(model, samples, directory / "embeddings.npz")
    if tokens is not None and hasattr(model, "fusion_attention"):
        items = np.sort(rng.choice(np.arange(1, samples.num_items + 1), size=min(FUSION_SAMPLE, samples.num_items),
                                   replace=False))
        if model.fusion_attention(torch.as_tensor(items[:1], device=device)):   # [] for mean / precomputed arms
            write_fusion_attention(model, tokens, items, device=device, directory=directory)
    pool = samples.splits.get("test", np.zeros(0, dtype=np.int64))
    pool = pool[samples.history_len[pool] > 0] if len(pool) else pool
    if len(pool):
        rows = np.sort(rng.choice(pool, size=min(RANKER_SAMPLE, len(pool)), replace=False))
        write_ranker_attention(model, samples, rows, device=device, path=directory / "ranker_attention.npz")
    users = np.unique(samples.user[samples.splits["train"]])
    users = np.sort(rng.choice(users, size=min(RECOMMEND_SAMPLE, len(users)), replace=False))
    recs = recommend(model, samples, users, k=k, device=device)
    (directory / "recommendations.json").write_text(json.dumps(recs))
    return directory
