"""MLflow records of top-K runs: find a finished run by (model, seed, config hash), or train and log one.

Runs go to experiment `em3` with tags em3.kind=topk, em3.arm=<model>, em3.dataset, em3.group,
em3.config_hash, em3.phase (tune or seed); params `topk.<field>`; epoch metrics at step = epoch;
final metrics {val,test}/{recall,ndcg,precision}_at_K (MLflow forbids "@" in metric names;
`metric_key("val/recall@20") == "val/recall_at_20"`), best_epoch, time/train_seconds, params/trainable.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from mlflow.entities import Param

from em3.config import CONFIG_VERSION
from em3.topk.config import TopKConfig, config_hash, to_dict
from em3.topk.data import TopKData
from em3.training.tracking import RunTracker, client, experiment_id, retry


def metric_key(name: str) -> str:
    """The MLflow spelling of a metric name: "@" becomes "_at_"."""
    return name.replace("@", "_at_")


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    model: str
    seed: int
    metrics: dict[str, float]   # "@" spelling: val/recall@20, test/ndcg@10, best_epoch, ...
    reused: bool                # True: found FINISHED in MLflow, not trained now


def find_finished(model: str, seed: int, chash: str) -> RunRecord | None:
    """The newest FINISHED top-K run of this (model, seed, config hash), if any."""
    c = client()
    exp = experiment_id(c)
    flt = (f"tags.`em3.kind` = 'topk' and tags.`em3.arm` = '{model}' and tags.`em3.config_hash` = '{chash}' "
           f"and tags.`em3.seed` = '{seed}' and attributes.status = 'FINISHED'")
    runs = retry(lambda: c.search_runs([exp], filter_string=flt, order_by=["attributes.start_time DESC"], max_results=1))
    if not runs:
        return None
    r = runs[0]
    metrics = {k.replace("_at_", "@"): v for k, v in r.data.metrics.items()}
    # Runs logged before per-epoch validation got its own key hold both the epoch curve and the
    # final value under val/recall_at_20; the final value is the one at step 0.
    for key in [k for k in r.data.metrics if k == "val/recall_at_20"]:
        final = [m.value for m in retry(lambda: c.get_metric_history(r.info.run_id, key)) if m.step == 0]
        if final:
            metrics[key.replace("_at_", "@")] = final[-1]
    return RunRecord(run_id=r.info.run_id, model=model, seed=seed, metrics=metrics, reused=True)


def tracked_fit(cfg: TopKConfig, data: TopKData, *, group: str, phase: str,
                fit_fn: Callable[..., object] | None = None) -> RunRecord:
    """Reuse the FINISHED run of (model, seed, config hash) or train one now and log it."""
    chash = config_hash(cfg, dataset=data.name)
    found = find_finished(cfg.model, cfg.seed, chash)
    if found is not None:
        return found
    if fit_fn is None:
        from em3.topk.train import fit as fit_fn
    c = client()
    tags = {"em3.kind": "topk", "em3.arm": cfg.model, "em3.dataset": data.name, "em3.group": group,
            "em3.config_hash": chash, "em3.seed": str(cfg.seed), "em3.phase": phase,
            "em3.config_version": str(CONFIG_VERSION), "em3.device": cfg.device, "em3.pid": str(os.getpid())}
    run = retry(lambda: c.create_run(experiment_id(c), tags=tags, run_name=f"topk-{cfg.model}-s{cfg.seed}-{chash[:6]}"))
    tracker = RunTracker(c, run.info.run_id)
    params = [Param(f"topk.{k}", ",".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in to_dict(cfg).items()]
    retry(lambda: c.log_batch(tracker.run_id, params=params))
    tracker.log_json({"topk": to_dict(cfg), "dataset": data.name, **data.summary()}, "config.json")

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        tracker.metrics({metric_key(k): v for k, v in row.items()}, step=epoch)
        tracker.flush()

    try:
        result = fit_fn(cfg, data, on_epoch=on_epoch)
    except BaseException as e:
        tracker.fail(f"{type(e).__name__}: {e}")
        raise
    final = {**{f"val/{k}": v for k, v in result.val.items()}, **{f"test/{k}": v for k, v in result.test.items()},
             "best_epoch": float(result.best_epoch), "epochs_run": float(result.epochs_run),
             "time/train_seconds": result.train_seconds, "params/trainable": float(result.trainable_params)}
    tracker.metrics({metric_key(k): v for k, v in final.items()})
    tracker.finish()
    return RunRecord(run_id=tracker.run_id, model=cfg.model, seed=cfg.seed, metrics=final, reused=False)
