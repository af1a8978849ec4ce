"""The training loop: AdamW on BCE + λ·CIC, early stopping on validation AUC, best state kept.

Read top to bottom: optimiser → per epoch (seeded batches → loss → step → validate →
early stop → checkpoint callback) → best weights restored. Logging and checkpoint
writing are callbacks supplied by run.py, so this loop stays free of MLflow and files.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from em3.config import Config
from em3.data.schema import SampleSet
from em3.errors import RunError
from em3.evaluation.evaluate import evaluate_split
from em3.models.losses import bce_loss, cic_loss
from em3.training.batches import drop_ids, epoch_permutation, global_batches, id_dropout_rng, shard, to_batch
from em3.training.eta import TrainEta
from em3.training.hooks import Hooks, Progress

CONTENT_PREFIXES = ("content", "fusion", "history_encoder", "lora")


@dataclass
class FitState:
    """Everything needed to continue training after an epoch (the resume state, minus weights)."""

    epoch: int = 0                          # completed epochs
    global_step: int = 0
    best_auc: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0                     # epochs since the last validation AUC improvement
    train_seconds: float = 0.0              # training steps only (validation excluded)
    val_seconds: float = 0.0                # the per-epoch validation passes
    samples_seen: int = 0
    best_weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class World:
    """This process's place in a distributed run (rank 0 of 1 when single-process)."""

    rank: int = 0
    size: int = 1


def is_content_param(name: str) -> bool:
    """Parameters of the content module (Fusion-Q-Former, adapters) get lr_content; the CIC heads go with the ranker."""
    parts = name.split(".")
    return any(p.startswith(CONTENT_PREFIXES) for p in parts)


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW with two parameter groups: content module (lr_content) and ranker + IDs (lr_ranker)."""
    if hasattr(model, "param_groups"):
        groups = model.param_groups(lr_content=cfg.train.lr_content, lr_ranker=cfg.train.lr_ranker)
    else:  # a plain module: split by parameter name
        content, ranker = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (content if is_content_param(name) else ranker).append(p)
        groups = [g for g in ({"params": content, "lr": cfg.train.lr_content, "name": "content"},
                              {"params": ranker, "lr": cfg.train.lr_ranker, "name": "ranker"}) if g["params"]]
    return torch.optim.AdamW(groups, weight_decay=cfg.train.weight_decay)


def compute_loss(out: Any, labels: torch.Tensor, cfg: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, bce, cic) with total = BCE + λ·CIC; CIC is 0 when λ = 0 or the model has no content."""
    bce = bce_loss(out.logits.float(), labels)
    cic = torch.zeros((), device=labels.device)
    if cfg.model.cic.weight > 0 and out.cic_content is not None:
        cic = cic_loss(out.cic_content.float(), out.cic_id.float(), temperature=cfg.model.cic.temperature,
                       neg_content=None if out.cic_neg_content is None else out.cic_neg_content.float(),
                       neg_id=None if out.cic_neg_id is None else out.cic_neg_id.float())
    return bce + cfg.model.cic.weight * cic, bce, cic


def fit(model: nn.Module, samples: SampleSet, cfg: Config, *, device: torch.device, hooks: Hooks | None = None,
        state: FitState | None = None, optimizer_state: dict | None = None, world: World = World(),
        on_step: Callable[[int, dict[str, float]], None] | None = None,
        on_epoch_end: Callable[[FitState, dict[str, float], torch.optim.Optimizer], None] | None = None,
        ) -> tuple[FitState, str]:
    """Train in place; returns (state, how it ended: 'completed', 'early_stop' or 'cancelled').

    `state`/`optimizer_state` continue a run from a checkpoint. The best weights (by val AUC)
    are loaded into the model before returning.
    """
    hooks = hooks or Hooks()
    state = state or FitState()
    tc = cfg.train
    optimizer = make_optimizer(model, cfg)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    net: nn.Module = model
    if world.size > 1:
        net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    autocast = device.type == "cuda" and tc.bf16
    train_rows = samples.splits["train"]
    n_batches = len(global_batches(train_rows, batch_size=tc.batch_size, max_steps=tc.max_steps_per_epoch,
                                   world_size=world.size))
    if n_batches == 0:
        raise RunError(f"the train split has {len(train_rows)} samples: too few for one batch")
    ended = "completed"
    eta = TrainEta()          # the progress reports' ETA: recent step times (em3/training/eta.py)
    while state.epoch < tc.epochs:
        epoch = state.epoch + 1
        # step 1: this epoch's batches and dropout stream are pure functions of (seed, epoch) -> resumable
        torch.manual_seed(tc.seed * 100_003 + epoch)
        perm = train_rows[epoch_permutation(len(train_rows), seed=tc.seed, epoch=epoch)]
        drop_rng = id_dropout_rng(seed=tc.seed, epoch=epoch, rank=world.rank)
        batches = global_batches(perm, batch_size=tc.batch_size, max_steps=tc.max_steps_per_epoch,
                                 world_size=world.size)
        net.train()
        t0 = t_step = time.perf_counter()
        epoch_samples = 0
        for step, rows in enumerate(batches, start=1):
            if hooks.stop_requested():
                return _finish(model, state), "cancelled"
            # step 2: forward on this rank's share; scale so DDP's gradient mean equals the global-batch mean
            local = shard(rows, rank=world.rank, world_size=world.size)
            batch = drop_ids(to_batch(samples, local, device), p=tc.id_dropout, history=tc.id_dropout_history,
                             rng=drop_rng)                              # training only: evaluation never drops
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                out = net(batch)
            loss, bce, cic = compute_loss(out, batch["label"], cfg)
            if not torch.isfinite(loss):
                raise RunError(f"loss became NaN at epoch {epoch} step {step} (bce={bce.item():.4g}, "
                               f"cic={cic.item():.4g}); lower train.lr_content / train.lr_ranker or check the data")
            scale = len(local) * world.size / len(rows)
            # step 3: update
            optimizer.zero_grad(set_to_none=True)
            (loss * scale).backward()
            optimizer.step()
            state.global_step += 1
            epoch_samples += len(rows)
            now = time.perf_counter()
            eta.step(now - t_step)
            t_step = now
            rate = epoch_samples / max(now - t0, 1e-9)
            left = eta.seconds_left(steps_left=len(batches) - step, epochs_after=tc.epochs - epoch,
                                    steps_per_epoch=len(batches))
            if on_step is not None and (state.global_step % tc.log_every == 0 or step == len(batches)):
                on_step(state.global_step, {"train/loss": loss.item(), "train/bce": bce.item(), "train/cic": cic.item()})
            hooks.progress(Progress(phase="train", epoch=epoch, epochs=tc.epochs, step=step,
                                    steps_per_epoch=len(batches), samples_per_s=rate, eta_s=left, loss=loss.item()))
        train_seconds = time.perf_counter() - t0
        # step 4: validate (every rank does it, so early-stop decisions agree without communication)
        metrics = {f"val/{k}": v for k, v in evaluate_split(model, samples, "val", batch_size=tc.eval_batch_size,
                                                              device=device).items()}
        val_seconds = time.perf_counter() - t0 - train_seconds
        eta.validated(val_seconds)
        state.train_seconds += train_seconds
        state.val_seconds += val_seconds
        state.samples_seen += epoch_samples
        metrics.update({"time/epoch_seconds": train_seconds + val_seconds, "time/train_epoch_seconds": train_seconds,
                        "time/val_epoch_seconds": val_seconds, "perf/train_samples_per_s": epoch_samples / train_seconds})
        state.epoch = epoch
        auc = metrics["val/auc"]
        if auc > state.best_auc or state.best_weights is None:
            state.best_auc, state.best_epoch, state.bad_epochs = auc, epoch, 0
            state.best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            state.bad_epochs += 1
        if on_epoch_end is not None:
            on_epoch_end(state, metrics, optimizer)
        hooks.epoch(epoch, metrics)
        if tc.patience > 0 and state.bad_epochs >= tc.patience:
            ended = "early_stop"
            break
        if hooks.stop_requested():
            return _finish(model, state), "cancelled"
    return _finish(model, state), ended


def _finish(model: nn.Module, state: FitState) -> FitState:
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    return state
