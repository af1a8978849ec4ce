"""CUDA checks of the model under bf16 autocast (skipped on CPU); run as a script for step timings.

    python tests/models/test_models_gpu.py   # per-strategy train-step time and peak memory, MovieLens-sized fakes
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from em3.config import ARMS  # noqa: E402
from em3.models.em3 import build_model  # noqa: E402
from em3.models.losses import bce_loss, cic_loss  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _step(model, batch, *, bf16: bool = True):
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = model(batch)
    loss = bce_loss(out.logits.float(), batch["label"])
    if out.cic_content is not None:
        loss = loss + 1e-3 * cic_loss(out.cic_content.float(), out.cic_id.float(), temperature=0.1,
                                      neg_content=None if out.cic_neg_content is None else out.cic_neg_content.float(),
                                      neg_id=None if out.cic_neg_id is None else out.cic_neg_id.float())
    loss.backward()
    return out, loss


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("ranker", ["din", "dcnv2"])
def test_every_arm_on_cuda_bf16(config, samples, tokens, batch, ranker):
    batch = {k: v.cuda() for k, v in batch.items()}
    for arm in ARMS:
        torch.manual_seed(0)
        model = build_model(config(arm, model__ranker__kind=ranker), samples=samples, tokens=tokens).cuda().train()
        out, loss = _step(model, batch)
        assert torch.isfinite(loss), arm
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters()), arm
        if model.content is not None:
            emb = model.item_content_embeddings()
            assert emb.device.type == "cuda" and torch.isfinite(emb).all(), arm
        scores = model.eval().score(batch["user"], batch["history"], batch["item"][:, None].expand(-1, 3))
        assert scores.shape == (8, 3) and torch.isfinite(scores).all()


@pytest.mark.gpu
@cuda
def test_lora_gradient_separation_on_cuda(config, samples, tokens):
    from em3.models.history import ContentEncoder
    enc = ContentEncoder(config("em3").model, tokens=tokens).cuda()
    target = torch.tensor([1, 2, 3], device="cuda")
    history = torch.tensor([[0, 4, 5], [6, 7, 8], [0, 0, 9]], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, hist = enc(target, history)
    hist.float().pow(2).sum().backward()
    for n, p in enc.fusion.named_parameters():
        if "lora_" not in n:
            assert p.grad is None or (p.grad == 0).all(), n
        elif "lora_B" in n:                                  # lora_A's is 0 while lora_B starts at 0
            assert p.grad is not None and p.grad.float().abs().sum() > 0, n


def bench(*, steps: int = 10, batch_size: int = 256, history: int = 50) -> list[dict]:
    """Train-step seconds and peak memory per history strategy with MovieLens-sized fake tokens."""
    import numpy as np
    import pandas as pd

    from em3.config import Config, with_arm, with_overrides
    from em3.data.schema import SampleSet
    from tests.models.conftest import ItemTokens

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    items, users, ti, ci, tt, ct = 1682, 943, 49, 1280, 64, 384
    rng = np.random.default_rng(0)
    text_mask = np.arange(tt)[None] < rng.integers(8, tt + 1, size=items + 1)[:, None]
    tokens = ItemTokens.of(image=rng.normal(size=(items + 1, ti, ci)).astype(np.float16),
                        image_mask=np.ones((items + 1, ti), bool),
                        text=rng.normal(size=(items + 1, tt, ct)).astype(np.float16),
                        text_mask=text_mask, image_grid=(7, 7), text_labels=[], image_missing=0)
    id_index = np.arange(items + 1, dtype=np.int64) + 1
    id_index[0] = 0
    e = np.zeros(0, np.int64)
    samples = SampleSet(num_users=users, num_items=items, item_ids=np.arange(items), user_ids=np.arange(users),
                        id_index=id_index, num_id_rows=items + 2, cold_items=e, user=e, item=e,
                        label=np.zeros(0, np.float32), rating=np.zeros(0, np.float32), timestamp=e,
                        history=np.zeros((0, history), np.int64), history_len=e, splits={},
                        item_attributes=pd.DataFrame())
    pop = 1.0 / np.arange(1, items + 1) ** 0.8                              # popularity skew: overlapping histories
    pop /= pop.sum()
    draw = lambda *shape: torch.as_tensor(rng.choice(np.arange(1, items + 1), size=shape, p=pop), device=device)
    rows = []
    for arm, dedup in [("id_only", True), ("precomputed", True), ("em3_frozen_history", True), ("em3", True),
                       ("em3", False), ("em3_shared_history", True), ("em3_shared_history", False)]:
        torch.manual_seed(0)
        cfg = with_overrides(with_arm(Config(), arm), {"model.history.dedup": dedup})
        model = build_model(cfg, samples=samples, tokens=tokens).to(device).train()
        opt = torch.optim.AdamW(model.param_groups(lr_content=1e-3, lr_ranker=1e-3))
        times = []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for i in range(steps + 3):
            batch = {"user": torch.randint(0, users, (batch_size,), device=device), "item": draw(batch_size),
                     "history": draw(batch_size, history),
                     "label": torch.randint(0, 2, (batch_size,), device=device).float()}
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            _step(model, batch, bf16=device.type == "cuda")
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        trainable, total = model.count_parameters()
        rows.append({"arm": arm, "strategy": cfg.model.history.strategy, "dedup": dedup,
                     "step_ms": round(1000 * float(np.median(times)), 1),
                     "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None,
                     "trainable": trainable, "total": total, "history_trainable": model.history_trainable_parameters()})
        print(json.dumps(rows[-1]), flush=True)
        del model, opt
    return rows


if __name__ == "__main__":
    bench(steps=int(sys.argv[1]) if len(sys.argv) > 1 else 10)
