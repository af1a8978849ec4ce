"""`run_training`: one tracked training run from a config — data, cache, model, fit, evaluation, artifacts.

Rank 0 of a torchrun world owns the MLflow run; the other ranks train and return its id.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from em3.config import Config, from_dict
from em3.data.cache import build_item_tokens
from em3.data.load import load_dataset
from em3.data.samples import build_samples
from em3.errors import RunError
from em3.evaluation.evaluate import evaluate_splits
from em3.evaluation.alignment import cic_space_metrics
from em3.evaluation.metrics import evenness
from em3.evaluation.explain import item_token_mask, write_all
from em3.evaluation.recommend import evaluate_topk, topk_users
from em3.models.em3 import build_model
from em3.models.losses import alignment, uniformity
from em3.training import checkpoint, distributed
from em3.training.batches import to_batch
from em3.training.fit import FitState, World, fit
from em3.training.hooks import Hooks, Progress, RunResult
from em3.training.memory import PeakMemory
from em3.training.runtime import configure_run
from em3.training.tracking import RunTracker, download_dir


def logged_config(run_id: str) -> Config:
    """The resolved config a run logged as config.json (a run can be rebuilt from it)."""
    with tempfile.TemporaryDirectory() as d:
        try:
            path = download_dir(run_id, "config.json", Path(d))
        except Exception as e:  # noqa: BLE001 - unknown run or missing artifact
            raise RunError(f"run {run_id}: cannot read its config.json ({type(e).__name__}: {e})") from None
        return from_dict(json.loads(Path(path).read_text()))


def load_run_data(cfg: Config, *, hooks: Hooks, world: World = World()):
    """(raw, samples, tokens) for a config; tokens None for arms without content. Rank 0 builds the cache first."""
    hooks.progress(Progress(phase="data", message=f"loading {cfg.data.source}"))
    raw = load_dataset(cfg.data)
    samples = build_samples(raw, cfg.data)
    tokens = None
    if cfg.model.use_content:
        hooks.progress(Progress(phase="cache", message="building the feature cache"))
        if world.rank != 0:
            distributed.barrier(world)
        tokens = build_item_tokens(raw, samples, cfg.encoder, modalities=cfg.model.fusion.modalities, progress=False,
                                   on_batch=hooks.cache_batch)
        if world.rank == 0:
            distributed.barrier(world)
    return raw, samples, tokens


@torch.no_grad()
def embedding_quality(model: torch.nn.Module, samples, cfg: Config, device: torch.device) -> dict[str, float]:
    """align/alignment and align/uniformity of the CIC-projected content/ID embeddings of a val batch."""
    rows = samples.splits["val"][: cfg.train.eval_batch_size]
    if len(rows) < 2:
        return {}
    model.eval()
    out = model(to_batch(samples, rows, device))
    model.train()
    if out.cic_content is None or out.cic_id is None or len(out.cic_content) < 2:
        return {}
    return {"align/alignment": alignment(out.cic_content, out.cic_id).item(),
            "align/uniformity": uniformity(out.cic_content).item()}


EVENNESS_ITEMS = 256   # catalogue items whose Fusion-Q-Former attention the per-epoch fusion/query_evenness reads


@torch.no_grad()
def query_evenness(model: torch.nn.Module, samples, cfg: Config, device: torch.device, tokens=None) -> dict[str, float]:
    """fusion/query_evenness: how evenly the Fusion-Q-Former's queries spread their attention over an item's
    real tokens (em3.evaluation.metrics.evenness of the last layer, masked by the token store `tokens` where
    given; mean over a fixed seeded sample of catalogue items, the heads and the queries). 1.0 = uniform, i.e.
    the queries pool like a mean; lower = they pick tokens. {} for arms without queries (mean fusion,
    precomputed, id_only)."""
    if not hasattr(model, "fusion_attention") or samples.num_items < 1:
        return {}
    rng = np.random.default_rng(cfg.train.seed)
    items = np.sort(rng.choice(np.arange(1, samples.num_items + 1), size=min(EVENNESS_ITEMS, samples.num_items),
                               replace=False))
    layers, segments = model.fusion_attention(torch.as_tensor(items, device=device))
    if not layers:
        return {}
    mask = item_token_mask(tokens, items, segments)[:, None, None, :] if tokens is not None else None
    values = evenness(layers[-1].cpu().numpy(), mask)                     # (N, heads, Nq)
    return {"fusion/query_evenness": float(np.nanmean(values))} if np.isfinite(values).any() else {}


def run_training(cfg: Config, *, hooks: Hooks | None = None, tags: dict | None = None, run_name: str | None = None,
                 resume_run_id: str | None = None) -> RunResult:
    """Train one arm and log it to MLflow; returns the RunResult (status KILLED when cancelled).

    With resume_run_id the run's logged config is used (its train.epochs may be raised by cfg)
    and training continues from its last checkpoint in the same MLflow run. A failure marks
    the run FAILED with an em3.error tag and re-raises.
    """
    hooks = hooks or Hooks()
    if resume_run_id:
        logged = logged_config(resume_run_id)
        cfg = replace(logged, train=replace(logged.train, epochs=max(cfg.train.epochs, logged.train.epochs),
                                            device=cfg.train.device))
    device = distributed.resolve_device(cfg.train.device)
    cpu_tags = configure_run(cfg)
    world = distributed.setup(device.type)
    tracker = None
    if world.rank == 0:
        tracker = (RunTracker.reopen(resume_run_id) if resume_run_id else
                   RunTracker.start(cfg, tags={**cpu_tags, **(tags or {})}, run_name=run_name, device=str(device)))
    run_id = distributed.broadcast(tracker.run_id if tracker else "", world)
    try:
        hooks.progress(Progress(phase="data", message="MLflow run " + ("reopened" if resume_run_id else "created"),
                                run_id=run_id))
        with tempfile.TemporaryDirectory(prefix="em3-run-") as work, PeakMemory(device) as memory:
            return _train(cfg, run_id=run_id, tracker=tracker, hooks=hooks, device=device, world=world,
                          resume=bool(resume_run_id), work=Path(work), memory=memory)
    except BaseException as e:
        killed = isinstance(e, KeyboardInterrupt)          # Ctrl-C, or SIGTERM via the CLI's handler
        message = "interrupted" if killed else f"{type(e).__name__}: {e}"
        if tracker is not None:
            tracker.fail(message, status="KILLED" if killed else "FAILED")
        e.add_note(f"MLflow run {run_id} marked {'KILLED' if killed else 'FAILED'}")
        raise
    finally:
        distributed.teardown(world)


def _train(cfg: Config, *, run_id: str, tracker: RunTracker | None, hooks: Hooks, device: torch.device,
           world: World, resume: bool, work: Path, memory: PeakMemory) -> RunResult:
    t_setup = time.perf_counter()     # time/setup_seconds: the data, the feature cache, the model (and a resume's checkpoint)
    raw, samples, tokens = load_run_data(cfg, hooks=hooks, world=world)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, samples=samples, tokens=tokens).to(device)
    if tracker is not None:
        tracker.tag("em3.memory_kind", memory.kind)
    state, optimizer_state = None, None
    if resume:
        with tempfile.TemporaryDirectory() as d:
            try:
                folder = download_dir(run_id, "checkpoint", Path(d))
            except Exception as e:  # noqa: BLE001 - MLflow raises several types for a missing artifact
                raise RunError(f"run {run_id} has no checkpoint/ to resume from (it stopped before its first "
                               f"epoch ended?): {type(e).__name__}: {e}") from None
            weights, optimizer_state, state = checkpoint.load_resume(folder)
        model.load_state_dict(weights)
    n_total = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ckpt_dir = work / "checkpoint"

    def on_step(step: int, values: dict[str, float]) -> None:
        if tracker is not None:
            tracker.metrics(values, step)

    epoch_end = [0.0]    # time/epoch_end_seconds: the per-epoch extras below, outside fit()'s own timers

    def on_epoch_end(st: FitState, metrics: dict[str, float], optimizer: torch.optim.Optimizer) -> None:
        if tracker is None:
            return
        t0 = time.perf_counter()
        metrics.update(embedding_quality(model, samples, cfg, device))
        metrics.update(query_evenness(model, samples, cfg, device, tokens))
        tracker.metrics(metrics, st.epoch)
        tracker.flush()
        checkpoint.save_resume(ckpt_dir, model_state=model.state_dict(), optimizer_state=optimizer.state_dict(),
                               state=st)
        for side in sorted(ckpt_dir.glob("*.json")):   # sidecars first: each also accepts the file it replaces
            tracker.artifact(side, "checkpoint")
        tracker.artifacts(ckpt_dir, "checkpoint")
        epoch_end[0] += time.perf_counter() - t0

    setup_seconds = time.perf_counter() - t_setup
    state, ended = fit(model, samples, cfg, device=device, hooks=hooks, state=state, optimizer_state=optimizer_state,
                       world=world, on_step=on_step, on_epoch_end=on_epoch_end)
    epochs = max(state.epoch, 1)
    summary = {"best_epoch": float(state.best_epoch), "params/trainable": float(n_train), "params/total": float(n_total),
               "params/history_trainable": float(model.history_trainable_parameters()),
               "time/setup_seconds": setup_seconds, "time/epoch_end_seconds": epoch_end[0],
               "time/train_seconds": state.train_seconds, "time/val_seconds": state.val_seconds,
               "time/train_seconds_per_epoch": state.train_seconds / epochs,
               "time/val_seconds_per_epoch": state.val_seconds / epochs,
               "perf/samples_per_s": state.samples_seen / max(state.train_seconds, 1e-9),   # training steps only
               "perf/peak_memory_mb": memory.mb}
    if ended == "cancelled":
        if tracker is not None:
            tracker.metrics(summary, state.epoch)
            tracker.finish("KILLED")
        hooks.progress(Progress(phase="done", message="cancelled"))
        return RunResult(run_id=run_id, status="KILLED", metrics=summary, train_seconds=state.train_seconds,
                         peak_memory_mb=summary["perf/peak_memory_mb"])
    metrics = dict(summary)
    if world.rank == 0:
        hooks.progress(Progress(phase="eval", message="evaluating " + ", ".join(s for s in samples.splits if s != "train")))
        t0 = time.perf_counter()
        metrics.update(evaluate_splits(model, samples, batch_size=cfg.train.eval_batch_size, device=device))
        t1 = time.perf_counter()
        users = topk_users(samples, sample=cfg.train.topk_users, seed=cfg.train.seed)
        hooks.progress(Progress(phase="eval", message=f"top-{cfg.train.topk} ranking of the catalogue for "
                                                      f"{len(users):,} test users"))
        metrics.update(evaluate_topk(model, samples, k=cfg.train.topk, device=device, users=users))
        t2 = time.perf_counter()
        hooks.progress(Progress(phase="explain", message="writing explain artifacts"))
        explain = write_all(model, samples, tokens, seed=cfg.train.seed, k=cfg.train.topk, device=device,
                            directory=work / "explain",
                            on_artifact=lambda name: hooks.progress(Progress(phase="explain", message=f"writing {name}")))
        tracker.artifacts(explain, "explain")
        with np.load(explain / "embeddings.npz") as emb:          # did CIC align the two spaces? (align/*)
            metrics.update(cic_space_metrics(emb))
        metrics.update({"time/eval_seconds": t1 - t0, "time/topk_seconds": t2 - t1,
                        "time/explain_seconds": time.perf_counter() - t2, "perf/peak_memory_mb": memory.mb})
        # Final metrics at the last epoch's step, so each key's latest value is the best model's.
        tracker.metrics({k: v for k, v in metrics.items() if np.isfinite(v)}, state.epoch)
        tracker.finish("FINISHED")
    distributed.barrier(world)   # the other ranks wait for rank 0's evaluation before the group is torn down
    hooks.progress(Progress(phase="done", message="finished"))
    return RunResult(run_id=run_id, status="FINISHED", metrics=metrics, train_seconds=state.train_seconds,
                     peak_memory_mb=metrics["perf/peak_memory_mb"])
