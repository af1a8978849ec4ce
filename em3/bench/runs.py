"""The bench's view of the MLflow store: config hashes (the resume key) and the runs of a bench group."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from em3.config import Config, flatten

HASH_TAG = "em3.config_hash"
GROUP_TAG = "em3.group"
KIND_TAG = "em3.kind"


# Config fields added after bench runs were logged, with the value that reproduces the old behaviour.
# At that value a field stays out of the hash, so runs logged before it existed are still found.
ADDED_LATER: dict[str, str] = {"data.val_cold_item_frac": "0.0", "data.user_features": "auto",
                               "data.user_feature_buckets": "10", "model.ranker.user_features": "False",
                               "train.id_dropout": "0.0", "train.id_dropout_history": "False",
                               "train.deterministic": "False", "model.history.cut": "last",
                               "model.history.cut_k": "0", "encoder.tabular_buckets": "16",
                               "encoder.audio_encoder": "scratch", "encoder.audio_tokens": "16",
                               "data.item_fields": "auto", "speed.fast_dropout": "False",
                               "speed.fill_uninitialized": "True", "speed.compile": "off",
                               "speed.token_pca": "0", "encoder.image_top": "frozen",
                               "speed.ranker_dtype": "fp32"}
# Fields that say how a run is executed, not what is trained: never part of the hash (two processes of one
# thread each train the same experiments as one process of two; the folded token projection computes the
# same function as the plain one, in another order of additions, as another thread count does; so does
# the folded attention and DIN's key term per table row).
RUN_ONLY: frozenset[str] = frozenset({"speed.threads", "speed.fold_token_proj", "speed.fold_attention",
                                      "speed.din_table_keys", "speed.shared_token_reads",
                                      "speed.din_fused_unit", "speed.din_pack_history",
                                      "speed.pool_mean_tokens", "speed.din_pair_scores"})


def config_hash(cfg: Config | dict[str, Any]) -> str:
    """Short stable hash of the resolved, flattened config: two runs with the same hash are the same experiment."""
    flat = flatten(cfg) if not isinstance(cfg, dict) else cfg
    kept = {k: str(v) for k, v in flat.items() if ADDED_LATER.get(k) != str(v) and k not in RUN_ONLY}
    blob = json.dumps(kept, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


@dataclass
class RunRecord:
    """One logged run, as the bench tables need it."""

    run_id: str
    status: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def arm(self) -> str:
        return self.tags.get("em3.arm", "")

    @property
    def ranker(self) -> str:
        return self.tags.get("em3.ranker", "")


def group_runs(group: str, *, kind: str | None = None, status: str | None = "FINISHED") -> list[RunRecord]:
    """Every run tagged with this bench group (optionally of one kind and status), oldest first."""
    from em3.training.tracking import client, experiment_id, retry   # lazy: offline benches run without MLflow
    c = client()
    exp = experiment_id(c)
    filters = [f"tags.`{GROUP_TAG}` = '{group}'"]
    if kind:
        filters.append(f"tags.`{KIND_TAG}` = '{kind}'")
    if status:
        filters.append(f"attributes.status = '{status}'")
    out: list[RunRecord] = []
    token = None
    while True:
        page = retry(lambda: c.search_runs([exp], filter_string=" and ".join(filters), max_results=1000,
                                           order_by=["attributes.start_time ASC"], page_token=token))
        for r in page:
            out.append(RunRecord(run_id=r.info.run_id, status=r.info.status, tags=dict(r.data.tags),
                                 params=dict(r.data.params), metrics=dict(r.data.metrics)))
        token = page.token
        if not token:
            return out


def finished_by_hash(group: str) -> dict[str, RunRecord]:
    """{config hash: the latest FINISHED run of that config} within a group: what a resumed bench skips."""
    return {r.tags[HASH_TAG]: r for r in group_runs(group) if HASH_TAG in r.tags}


def backfill_alignment(records: dict[str, RunRecord], *, log: Callable[[str], None] = lambda s: None) -> int:
    """Log the end-of-run CIC space metrics (align/catalogue_*, em3.evaluation.alignment) on finished runs that
    predate them, computed from the run's own explain/embeddings.npz (its best model); returns how many runs got
    them. Runs without a shared space (no CIC heads) get none; their records are left as they are."""
    import tempfile
    from pathlib import Path

    import numpy as np
    from mlflow.entities import Metric

    from em3.evaluation.alignment import cic_space_metrics
    from em3.training.tracking import client, download_dir, retry

    done = 0
    for r in records.values():
        if "align/catalogue_alignment" in r.metrics or float(r.params.get("model.cic.weight", "0") or 0) <= 0 \
                or r.params.get("model.use_content", "True") != "True":
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = download_dir(r.run_id, "explain/embeddings.npz", Path(tmp))
            except Exception as e:  # noqa: BLE001 - an older run without the export: nothing to compute
                log(f"  {r.run_id}: no explain/embeddings.npz ({type(e).__name__})")
                continue
            with np.load(path) as emb:
                metrics = cic_space_metrics(emb)
        if not metrics:
            continue
        step = int(r.metrics.get("best_epoch", 0))
        now = int(time.time() * 1000)
        retry(lambda: client().log_batch(r.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]))
        r.metrics.update(metrics)
        done += 1
    return done
