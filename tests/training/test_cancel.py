"""Cancel in every phase: the feature cache build, evaluation and explain artifacts, not only inside fit."""
from __future__ import annotations

import pytest
from mlflow import MlflowClient

from em3 import paths
from em3.config import preset, with_overrides
from em3.data.cache import build_item_tokens, cache_dir
from em3.data.load import load_dataset
from em3.data.samples import build_samples
from em3.training.hooks import Cancelled, Hooks, Progress
from em3.training.run import run_training

QUICK = {"train.epochs": 1, "train.max_steps_per_epoch": 2}


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri=paths.tracking_uri())


def _run_of(group: str):
    exp = _client().get_experiment_by_name("em3").experiment_id
    (run,) = _client().search_runs([exp], filter_string=f"tags.`em3.group` = '{group}'")
    return run


def _stop_from(phase: str, seen: list[str]) -> Hooks:
    """Hooks that record each phase and request a stop from the first report of `phase` on."""
    def report(p: Progress) -> None:
        seen.append(p.phase)
    return Hooks(on_progress=report, should_stop=lambda: phase in seen)


def test_progress_raises_cancelled_outside_training_only_when_stop_was_requested():
    stop = Hooks(should_stop=lambda: True)
    for phase in ("cache", "eval", "explain"):
        with pytest.raises(Cancelled, match=f"cancelled during {phase}"):
            stop.progress(Progress(phase=phase))
    stop.progress(Progress(phase="train"))           # fit checks should_stop itself and ends cooperatively
    stop.progress(Progress(phase="done"))            # after the end there is nothing left to cancel
    Hooks(should_stop=lambda: False).progress(Progress(phase="cache"))
    Hooks().cache_batch(1, 2)
    assert issubclass(Cancelled, KeyboardInterrupt)  # run_training marks an interrupt KILLED, not FAILED


def test_cache_batch_reports_progress_and_cancels_the_build_leaving_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("EM3_CACHE_DIR", str(tmp_path / "cache"))   # a cold cache, whatever ran before
    cfg = preset("tiny")
    raw = load_dataset(cfg.data)
    samples = build_samples(raw, cfg.data)
    seen: list[Progress] = []
    hooks = Hooks(on_progress=seen.append, should_stop=lambda: len(seen) >= 2)
    with pytest.raises(Cancelled):
        build_item_tokens(raw, samples, cfg.encoder, progress=False, on_batch=hooks.cache_batch)
    # done / total item encodings over the modalities to build: 200 items x (image, text)
    assert [(p.phase, p.step, p.steps_per_epoch) for p in seen] == [("cache", 64, 400), ("cache", 128, 400)]
    root = cache_dir(cfg.encoder.cache_dir)
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]       # the half-written cache is gone


def test_a_run_cancelled_while_its_cache_phase_starts_ends_killed_before_training():
    seen: list[str] = []
    cfg = with_overrides(preset("tiny", "em3"), QUICK)
    with pytest.raises(Cancelled):
        run_training(cfg, hooks=_stop_from("cache", seen), tags={"em3.group": "cancel-cache"})
    assert "train" not in seen
    run = _run_of("cancel-cache")
    assert run.info.status == "KILLED" and "test/auc" not in run.data.metrics


def test_a_run_cancelled_at_evaluation_ends_killed_without_final_metrics():
    seen: list[str] = []
    cfg = with_overrides(preset("tiny", "id_only"), QUICK)
    with pytest.raises(Cancelled):
        run_training(cfg, hooks=_stop_from("eval", seen), tags={"em3.group": "cancel-eval"})
    run = _run_of("cancel-eval")
    assert run.info.status == "KILLED" and "test/auc" not in run.data.metrics
    assert "train/loss" in run.data.metrics                                  # what was logged before stays
