"""Fixtures of the dashboard tests: a store with runs of every state (one real tiny run), AppTest helpers."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from app.jobs import JobRegistry
from em3.config import preset, with_arm, with_overrides
from em3.paths import tracking_uri
from tests.app.fake_training import experiment_id, fake_train

PAGES = ("launch", "ablations", "runs", "attention", "alignment", "recommendations")


def tiny_quick(**overrides):
    """The real tiny preset, cut to one short epoch so the suite stays fast on 2 shared cores."""
    return with_overrides(preset("tiny"), {"train.epochs": 1, "train.max_steps_per_epoch": 3, **overrides})


def _unusual_runs() -> None:
    """A failed run, a running run without artifacts, a cancelled run and a run from an older config version."""
    cfg = with_overrides(preset("tiny"), {"train.epochs": 1})
    fake_train(cfg, run_name="fails", fail="ValueError: loss is NaN at step 2")
    fake_train(cfg, run_name="cancelled", hooks=_stop_after(1))
    client = MlflowClient(tracking_uri=tracking_uri())
    exp = experiment_id(client)
    client.create_run(exp, run_name="still-running", tags={"em3.arm": "em3", "em3.dataset": "synthetic-tiny",
                                                           "em3.kind": "ctr", "em3.config_version": "1"})
    old = client.create_run(exp, run_name="old-config", tags={"em3.arm": "em3", "em3.config_version": "0"})
    client.log_text(old.info.run_id, json.dumps({"data": {"source": "synthetic"}, "model": {"queries": 2}}), "config.json")
    client.log_text(old.info.run_id, json.dumps({"1": [[3, 0.5]]}), "explain/recommendations.json")
    client.log_metric(old.info.run_id, "test/auc", 0.61)
    client.set_terminated(old.info.run_id, "FINISHED")


def _stop_after(n: int):
    from em3.training.hooks import Hooks
    calls = [0]

    def stop() -> bool:
        calls[0] += 1
        return calls[0] > n
    return Hooks(should_stop=stop)


@pytest.fixture(scope="session")
def runs_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one ablation group (a real tiny em3 run + a fake em3_no_cic run with explain/) and unusual runs."""
    root = tmp_path_factory.mktemp("dash") / "mlruns"
    old = os.environ.get("EM3_MLRUNS_DIR")
    os.environ["EM3_MLRUNS_DIR"] = str(root)
    try:
        real = JobRegistry()
        group, ids = real.submit_group([tiny_quick()])
        snap = real.wait(ids[0], timeout=400)
        assert snap["state"] == "finished", snap["error"]
        no_cic = with_overrides(with_arm(tiny_quick(), "em3_no_cic"), {"train.epochs": 2})
        fake_train(no_cic, tags={"em3.group": group}, run_name=f"{group}/em3_no_cic-s0", explain=True)
        _unusual_runs()
    finally:
        if old is None:
            os.environ.pop("EM3_MLRUNS_DIR", None)
        else:
            os.environ["EM3_MLRUNS_DIR"] = old
    return root


@pytest.fixture
def use_store(monkeypatch: pytest.MonkeyPatch):
    """Point em3.paths (and so every page) at a given store for one test."""
    def _use(root: Path) -> None:
        monkeypatch.setenv("EM3_MLRUNS_DIR", str(root))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return _use


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> JobRegistry:
    """The pages' job registry (app.state.registry) swapped for one whose trainer is fake_train: no training."""
    import app.live   # imported here: they import streamlit, which the backend tests do without
    import app.state
    reg = JobRegistry(train_fn=lambda cfg, **kw: fake_train(cfg, **kw))
    monkeypatch.setattr(app.state, "registry", lambda: reg)
    monkeypatch.setattr(app.live, "registry", lambda: reg)
    return reg
