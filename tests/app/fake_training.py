"""A stand-in for em3.training.run.run_training that logs a real (small) MLflow run by the contract.

Used by the backend tests (fast, controllable: delay per step, failure, cancel) and by the
page-render benchmark. It follows docs/ARCHITECTURE.md's MLflow table, including explain/ artifacts.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from em3.arms import arm_tags
from em3.config import DEFAULT_MODALITIES, CONFIG_VERSION, Config, flatten, to_dict
from em3.paths import tracking_uri
from em3.training.hooks import Hooks, Progress, RunResult


def experiment_id(client: MlflowClient, name: str = "em3") -> str:
    """The trainer's own experiment lookup (same artifact location as real runs)."""
    from em3.training.tracking import experiment_id as real
    return real(client, name)


SIZES = {"image": 4, "text": 5, "tabular": 3, "audio": 4}   # tokens per modality in the fake attention


def write_explain(client: MlflowClient, run_id: str, *, n_items: int = 12, seed: int = 0, cic: bool = False,
                  content_attention: bool = False, modalities: tuple[str, ...] | None = None) -> None:
    """Small explain/ artifacts of the contract's shapes (item indices 1..n_items; items 11, 12 cold).

    cic: embeddings.npz also holds the shared space (content_aligned / id_aligned, matched pairs close);
    content_attention: ranker_attention.npz also holds DIN's content weights;
    modalities: the registry-era attention export over these modalities (segments + token_labels.json);
    None: the older export (image then text columns, text_tokens.json).
    """
    rng = np.random.default_rng(seed)
    grid, ti, tt, nq = (2, 2), 4, 5, 2
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        items = np.arange(1, n_items + 1)
        id_row = np.r_[np.arange(2, n_items), 1, 1][:n_items]                # the last two items share the unknown ID
        ids = rng.normal(size=(n_items, 6))
        ids[id_row == 1] = ids[id_row == 1][0]
        emb = {"item_index": items, "content": rng.normal(size=(n_items, 8)), "id": ids, "id_row": id_row}
        if cic:
            shared = rng.normal(size=(n_items, 4))
            unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)   # noqa: E731
            emb["content_aligned"] = unit(shared + 0.1 * rng.normal(size=shared.shape))
            emb["id_aligned"] = unit(np.where((id_row == 1)[:, None], shared[-1], shared))
        np.savez(d / "embeddings.npz", **emb)
        if modalities is None:
            att = rng.random((n_items, 1, 2, nq, ti + tt))
            np.savez(d / "fusion_attention.npz", items=items, attention=att / att.sum(-1, keepdims=True),
                     image_grid=np.array(grid), Ti=np.array(ti))
            (d / "text_tokens.json").write_text(json.dumps({str(i): [f"tok{i}_{j}" for j in range(tt)]
                                                            for i in items}))
        else:
            sizes = [SIZES[m] for m in modalities]
            att = rng.random((n_items, 1, 2, nq, sum(sizes)))
            np.savez(d / "fusion_attention.npz", items=items, attention=att / att.sum(-1, keepdims=True),
                     modalities=np.array(modalities), sizes=np.array(sizes), image_grid=np.array(grid),
                     Ti=np.array(SIZES["image"] if "image" in modalities else 0))
            labels = {m: {str(i): [f"{m}{i}_{j}" for j in range(SIZES[m])] for i in items}
                      for m in modalities if m != "image"}
            (d / "token_labels.json").write_text(json.dumps(labels))
        hist = rng.integers(1, n_items + 1, size=(3, 4))
        ranker = {"user": np.arange(3), "target": items[:3], "history": hist, "weights": rng.random((3, 4)),
                  "weights_kind": np.asarray("id")}
        if content_attention:
            ranker["content_weights"] = rng.random((3, 4))
        np.savez(d / "ranker_attention.npz", **ranker)
        (d / "recommendations.json").write_text(json.dumps({"0": [[1, 0.9], [2, 0.8]]}))
        client.log_artifacts(run_id, str(d), "explain")


def fake_train(cfg: Config, *, hooks: Hooks | None = None, tags: dict | None = None, run_name: str | None = None,
               resume_run_id: str | None = None, steps: int = 3, delay: float = 0.0, fail: str | None = None,
               explain: bool = False, calls: list | None = None,
               metrics: dict[str, float] | None = None) -> RunResult:
    """Log params, step losses, per-epoch val and final metrics (+ `metrics`); honour should_stop; optionally fail."""
    hooks = hooks or Hooks()
    if calls is not None:
        calls.append(run_name)
    client = MlflowClient(tracking_uri=tracking_uri())
    run = client.create_run(experiment_id(client), run_name=run_name, tags={
        **arm_tags(cfg), "em3.ranker": cfg.model.ranker.kind, "em3.kind": "ctr",
        "em3.dataset": f"synthetic-{cfg.data.preset}" if cfg.data.source == "synthetic" else cfg.data.source,
        "em3.config_version": str(CONFIG_VERSION), "em3.device": "cpu", **(tags or {})})
    rid = run.info.run_id
    client.log_batch(rid, params=[Param(k, str(v)) for k, v in flatten(cfg).items()])
    client.log_text(rid, json.dumps(to_dict(cfg)), "config.json")
    hooks.progress(Progress("data", message="MLflow run created", run_id=rid))   # as run_training reports it
    now = int(time.time() * 1000)
    rng = np.random.default_rng(cfg.train.seed)
    for epoch in range(1, cfg.train.epochs + 1):
        for step in range(1, steps + 1):
            if hooks.stop_requested():
                client.set_terminated(rid, "KILLED")
                return RunResult(rid, "KILLED", error="cancelled")
            if fail and epoch == 1 and step == 2:
                client.set_tag(rid, "em3.error", fail)
                client.set_terminated(rid, "FAILED")
                return RunResult(rid, "FAILED", error=fail)
            loss = 0.7 / (1 + 0.1 * ((epoch - 1) * steps + step))
            client.log_metric(rid, "train/loss", loss, timestamp=now, step=(epoch - 1) * steps + step)
            hooks.progress(Progress("train", epoch, cfg.train.epochs, step, steps, 1000.0, 1.0, loss))
            time.sleep(delay)
        val = {"val/auc": 0.6 + 0.02 * epoch, "val/gauc": 0.55 + 0.02 * epoch, "val/logloss": 0.69 - 0.01 * epoch,
               "align/alignment": 1.0 / epoch, "align/uniformity": -1.0 - 0.1 * epoch}
        client.log_batch(rid, metrics=[Metric(k, v, now, epoch) for k, v in val.items()])
        hooks.epoch(epoch, val)
    final = {f"{s}/{m}": float(v + rng.normal(0, 0.01)) for s in ("val", "test", "test_cold")
             for m, v in (("auc", 0.7), ("gauc", 0.62), ("logloss", 0.6))}
    final["best_epoch"] = float(cfg.train.epochs)
    final.update(metrics or {})
    client.log_batch(rid, metrics=[Metric(k, v, now, 0) for k, v in final.items()])
    if explain:
        content = cfg.model.use_content
        write_explain(client, rid, seed=cfg.train.seed, cic=content and cfg.model.cic.weight > 0,
                      content_attention=content and cfg.model.ranker.kind == "din",
                      modalities=None if cfg.model.fusion.modalities == DEFAULT_MODALITIES else cfg.model.fusion.modalities)
    client.set_terminated(rid, "FINISHED")
    hooks.progress(Progress("done", cfg.train.epochs, cfg.train.epochs))
    return RunResult(rid, "FINISHED", metrics=final)


def fake_train_fn(**options: Any):
    """fake_train with options bound (the registry calls train_fn(cfg, hooks=, tags=, run_name=))."""
    return lambda cfg, **kw: fake_train(cfg, **kw, **options)
