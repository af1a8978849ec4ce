"""The top-K training loop: BPR with one sampled negative per positive, full-ranking validation
every epoch, early stop after `patience` epochs without a better validation Recall@20, test
metrics of the best validation epoch (as MMRec's trainer)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from em3.errors import RunError
from em3.topk.config import TopKConfig
from em3.topk.data import TopKData
from em3.topk.metrics import full_ranking
from em3.topk.models import build_model
from em3.topk.models.base import TopKOutput, bpr
from em3.topk.sampling import NegativeSampler, training_pairs

CICFn = Callable[..., Tensor]


@dataclass
class TopKResult:
    best_epoch: int                                        # 1-based epoch of the best validation Recall@20
    val: dict[str, float]                                  # validation metrics at best_epoch
    test: dict[str, float]                                 # test metrics at best_epoch
    epochs_run: int
    train_seconds: float
    trainable_params: int = 0
    # per epoch: train/<loss terms>, val/epoch_recall@20 (not val/recall@20: that name is the best epoch's), seconds
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def loss_terms(out: TopKOutput, cfg: TopKConfig, *, cic_fn: CICFn | None) -> dict[str, Tensor]:
    """BPR + reg_weight * sum(aux) + cic_weight * CIC (when the model returned CIC inputs)."""
    terms = {"bpr": bpr(out.user, out.pos, out.neg)}
    total = terms["bpr"]
    if out.aux:
        terms["aux"] = sum(out.aux.values())
        total = total + cfg.reg_weight * terms["aux"]
    if out.cic is not None and cic_fn is not None:
        c = out.cic
        terms["cic"] = cic_fn(c.content, c.ids, temperature=cfg.cic_temperature, neg_content=c.neg_content, neg_id=c.neg_id)
        total = total + cfg.cic_weight * terms["cic"]
    terms["loss"] = total
    return terms


def evaluate(model: nn.Module, data: TopKData, split: str, *, cfg: TopKConfig) -> dict[str, float]:
    """Full-ranking metrics of one split; the user's training items are excluded (MMRec masks
    training items only, for validation and test alike)."""
    model.eval()
    with torch.no_grad():
        users, items = model.representations()                    # (U, D'), (I, D')
        return full_ranking(lambda u: users[u.to(users.device)] @ items.T, truth=data.split(split),
                            exclude=data.train, ks=cfg.topk, batch_size=cfg.eval_batch_size)


def _default_cic() -> CICFn:
    from em3.models.losses import cic_loss
    return cic_loss


def fit(cfg: TopKConfig, data: TopKData, *, fusion: nn.Module | None = None, cic_fn: CICFn | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        should_stop: Callable[[], bool] | None = None) -> TopKResult:
    """Train cfg.model on data from scratch (seeded by cfg.seed) and return the best-validation result."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model = build_model(cfg, data, fusion=fusion).to(device)
    wants_cic = cfg.model == "em3_freedom" and cfg.cic_weight > 0
    if wants_cic and cic_fn is None:
        cic_fn = _default_cic()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = NegativeSampler(data.train, rng=rng)
    pair_users, pair_items = training_pairs(data.train)
    if len(pair_users) == 0:
        raise RunError(f"{data.name}: no training positives")
    best = TopKResult(best_epoch=0, val={}, test={}, epochs_run=0, train_seconds=0.0,
                      trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad))
    best_score, bad, t_start = -1.0, 0, time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        model.pre_epoch(gen)
        order = rng.permutation(len(pair_users))
        sums: dict[str, float] = {}
        steps = 0
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            users, pos = pair_users[idx], pair_items[idx]
            neg = sampler.sample(users)
            cic_neg = (torch.from_numpy(rng.integers(0, data.num_items, size=(len(idx), cfg.cic_negatives))).to(device)
                       if wants_cic else None)                    # (B, K) uniform over all items
            t = lambda a: torch.from_numpy(a).to(device)       # noqa: E731
            terms = loss_terms(model(t(users), t(pos), t(neg), cic_neg=cic_neg), cfg, cic_fn=cic_fn)
            if not torch.isfinite(terms["loss"]):
                raise RunError(f"{cfg.model}: non-finite loss {terms['loss'].item()} at epoch {epoch}, step {steps}")
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            steps += 1
        val = evaluate(model, data, "val", cfg=cfg)
        row = {**{f"train/{k}": v / steps for k, v in sums.items()}, "val/epoch_recall@20": val["recall@20"],
               "time/epoch_seconds": time.perf_counter() - t0}
        best.history.append(row)
        best.epochs_run = epoch
        if val["recall@20"] > best_score:
            best_score, bad = val["recall@20"], 0
            best.best_epoch, best.val, best.test = epoch, val, evaluate(model, data, "test", cfg=cfg)
        else:
            bad += 1
        if on_epoch is not None:
            on_epoch(epoch, row)
        if (cfg.patience and bad >= cfg.patience) or (should_stop is not None and should_stop()):
            break
    best.train_seconds = time.perf_counter() - t_start
    return best
