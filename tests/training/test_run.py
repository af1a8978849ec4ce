"""run_training end to end on the tiny preset: MLflow logging, determinism, resume, cancel, failure, NaN."""
from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient

from em3 import paths
from em3.config import preset, with_overrides
from em3.errors import RunError
from em3.training import fit as fit_module
from em3.training.hooks import Hooks
from em3.training.run import run_training

QUICK = {"train.epochs": 1, "train.max_steps_per_epoch": 3}


def _cfg(arm: str = "id_only", **over):
    return with_overrides(preset("tiny", arm), {**QUICK, **over})


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri=paths.tracking_uri())


def _only_run(group: str):
    """The one run tagged with this group id (runs share the session's store)."""
    exp = _client().get_experiment_by_name("em3").experiment_id
    runs = _client().search_runs([exp], filter_string=f"tags.`em3.group` = '{group}'")
    assert len(runs) == 1
    return runs[0]


def test_run_logs_tags_params_metrics_and_artifacts(tmp_path):
    result = run_training(_cfg("em3", **{"train.epochs": 2}), tags={"em3.group": "g1"}, run_name="smoke")
    assert result.status == "FINISHED" and result.error is None
    run = _client().get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "smoke"
    tags = run.data.tags
    assert (tags["em3.arm"], tags["em3.ranker"], tags["em3.dataset"], tags["em3.kind"], tags["em3.group"]) == \
        ("em3", "din", "synthetic-tiny", "ctr", "g1")
    assert run.data.params["model.fusion.dim"] == "32" and run.data.params["train.epochs"] == "2"
    m = run.data.metrics
    for split in ("val", "test", "test_cold"):
        for name in ("auc", "gauc", "logloss"):
            assert 0 <= m[f"{split}/{name}"] < 5
            assert m[f"{split}/{name}"] == pytest.approx(result.metrics[f"{split}/{name}"])
    for key in ("test/recall_at_10", "test/ndcg_at_10", "best_epoch", "params/trainable", "params/total",
                "time/train_seconds", "perf/samples_per_s", "perf/peak_memory_mb"):
        assert key in m
    # every part of the run is timed (the Runs page's "where each run's time went")
    assert m["time/setup_seconds"] > 0 and m["time/epoch_end_seconds"] > 0
    assert m["time/eval_seconds"] > 0 and m["time/topk_seconds"] > 0 and m["time/explain_seconds"] > 0
    history = _client().get_metric_history(result.run_id, "val/auc")
    assert sorted({h.step for h in history}) == [1, 2]     # per epoch, plus the final value at the last step
    assert len(_client().get_metric_history(result.run_id, "align/alignment")) == 2
    evenness = [h.value for h in _client().get_metric_history(result.run_id, "fusion/query_evenness")]
    assert len(evenness) == 2 and all(0.0 < v <= 1.0 for v in evenness)
    assert _client().get_metric_history(result.run_id, "train/loss")
    arts = {a.path for a in _client().list_artifacts(result.run_id)}
    assert {"config.json", "checkpoint", "explain"} <= arts
    explain = {a.path.split("/")[-1] for a in _client().list_artifacts(result.run_id, "explain")}
    assert {"embeddings.npz", "fusion_attention.npz", "text_tokens.json", "ranker_attention.npz",
            "recommendations.json"} <= explain
    d = _client().download_artifacts(result.run_id, "explain", str(tmp_path))
    emb = np.load(f"{d}/embeddings.npz")
    assert emb["content"].shape == (201, 32) and emb["id"].shape[0] == 201
    att = np.load(f"{d}/fusion_attention.npz")
    assert att["attention"].ndim == 5 and att["attention"].shape[0] == len(att["items"]) == 32
    # the real tokens, in the attention's column order: masked tokens get exactly 0 weight, real ones > 0 here
    assert att["token_mask"].shape == (32, att["attention"].shape[-1]) and att["token_mask"].dtype == bool
    assert not (att["attention"] > 0)[~np.broadcast_to(att["token_mask"][:, None, None, None], att["attention"].shape)].any()
    assert 0 < att["token_mask"].sum() < att["token_mask"].size                  # some text padding
    recs = json.loads(open(f"{d}/recommendations.json").read())
    assert len(recs) == 50 and all(len(v) == 10 for v in recs.values())
    ckpt = {a.path.split("/")[-1] for a in _client().list_artifacts(result.run_id, "checkpoint")}
    assert {"best.pt", "last.pt"} <= ckpt


def test_same_seed_same_metrics():
    a = run_training(_cfg(**{"train.max_steps_per_epoch": 4}))
    b = run_training(_cfg(**{"train.max_steps_per_epoch": 4}))
    assert a.run_id != b.run_id
    keys = [k for k in a.metrics if k.split("/")[0] in ("val", "test", "test_cold")]
    assert {k: a.metrics[k] for k in keys} == {k: b.metrics[k] for k in keys}
    assert _client().get_metric_history(a.run_id, "fusion/query_evenness") == []   # id_only: no queries


def test_query_evenness_reads_the_last_layers_attention():
    """1.0 for queries that spread evenly (a mean), lower for ones that pick tokens; {} without queries."""
    import torch

    from em3.training.run import query_evenness

    class Stub(torch.nn.Module):
        def __init__(self, layers):
            super().__init__()
            self.layers = layers

        def fusion_attention(self, items):
            return [w[: len(items)] for w in self.layers], ()

    even = torch.full((300, 2, 2, 4), 0.25)                      # (N, heads, Nq, T)
    picky = torch.tensor([0.97, 0.01, 0.01, 0.01]).expand(300, 2, 2, 4)
    samples = type("S", (), {"num_items": 300})()
    cfg = preset("tiny")
    assert query_evenness(Stub([picky, even]), samples, cfg, torch.device("cpu")) == {
        "fusion/query_evenness": pytest.approx(1.0)}             # the last layer's
    assert query_evenness(Stub([even, picky]), samples, cfg, torch.device("cpu"))["fusion/query_evenness"] < 0.2
    assert query_evenness(Stub([]), samples, cfg, torch.device("cpu")) == {}
    assert query_evenness(torch.nn.Linear(2, 2), samples, cfg, torch.device("cpu")) == {}
    # with the token store's mask: [0.5, 0.5, 0, 0] over 4 real tokens is log 2 / log 4 = 0.5, over 2 it is even
    from em3.data.cache import ItemTokens

    half = torch.tensor([0.5, 0.5, 0.0, 0.0]).expand(300, 2, 2, 4)
    real = np.ones((301, 4), bool)
    store = ItemTokens.of(text=np.zeros((301, 4, 1), np.float32), text_mask=real)

    class Segmented(Stub):
        def fusion_attention(self, items):
            return [w[: len(items)] for w in self.layers], (("text", 4),)

    assert query_evenness(Segmented([half]), samples, cfg, torch.device("cpu"), store) == {
        "fusion/query_evenness": pytest.approx(0.5)}
    two = ItemTokens.of(text=np.zeros((301, 4, 1), np.float32), text_mask=np.tile(np.arange(4) < 2, (301, 1)))
    assert query_evenness(Segmented([half]), samples, cfg, torch.device("cpu"), two) == {
        "fusion/query_evenness": pytest.approx(1.0)}


def test_resume_reaches_the_same_metrics_as_an_uninterrupted_run():
    cfg = _cfg(**{"train.epochs": 2, "train.max_steps_per_epoch": 5, "train.patience": 0})
    straight = run_training(cfg)
    stopped = run_training(cfg, hooks=Hooks(on_epoch=lambda e, m: None, should_stop=_after_epochs(1)))
    assert stopped.status == "KILLED"
    assert _client().get_run(stopped.run_id).info.status == "KILLED"
    resumed = run_training(cfg, resume_run_id=stopped.run_id)
    assert resumed.run_id == stopped.run_id and resumed.status == "FINISHED"
    for k in ("val/auc", "test/auc", "test_cold/auc", "test/logloss"):
        assert resumed.metrics[k] == pytest.approx(straight.metrics[k], abs=1e-6), k
    steps = sorted({h.step for h in _client().get_metric_history(resumed.run_id, "val/auc")})
    assert steps == [1, 2]


def _after_epochs(n: int):
    """should_stop that turns True once n epochs have been reported via the val/auc step count."""
    state = {"steps": 0}

    def stop() -> bool:
        state["steps"] += 1
        return state["steps"] > 5 * n          # 5 steps per epoch: checked before each step and at epoch end
    return stop


def test_cancel_marks_run_killed_and_resume_without_checkpoint_says_so():
    result = run_training(_cfg(**{"train.epochs": 3}), hooks=Hooks(should_stop=lambda: True))
    assert result.status == "KILLED"
    assert _client().get_run(result.run_id).info.status == "KILLED"
    with pytest.raises(RunError, match=f"run {result.run_id} has no checkpoint/ to resume from"):
        run_training(_cfg(), resume_run_id=result.run_id)
    with pytest.raises(RunError, match="run 0123456789abcdef: cannot read its config.json"):
        run_training(_cfg(), resume_run_id="0123456789abcdef")


def test_failure_marks_run_failed_and_keeps_earlier_metrics():
    def boom(epoch, metrics):
        raise ValueError("injected failure after epoch 1")

    with pytest.raises(ValueError, match="injected"):
        run_training(_cfg(**{"train.epochs": 2}), hooks=Hooks(on_epoch=boom), tags={"em3.group": "fail-test"})
    run = _only_run("fail-test")
    assert run.info.status == "FAILED"
    assert "injected failure after epoch 1" in run.data.tags["em3.error"]
    assert "val/auc" in run.data.metrics                      # logged before the failure, still there
    assert _client().get_metric_history(run.info.run_id, "train/loss")


def test_nan_loss_stops_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(fit_module, "bce_loss", lambda logits, labels: (logits * float("nan")).mean())
    with pytest.raises(RunError, match="loss became NaN at epoch 1 step 1"):
        run_training(_cfg(), tags={"em3.group": "nan-test"})
    run = _only_run("nan-test")
    assert run.info.status == "FAILED" and "NaN" in run.data.tags["em3.error"]
