"""The job backend without Streamlit: FIFO order, cancel → KILLED, failure → FAILED with its error."""
from __future__ import annotations

import threading
import time

from mlflow.tracking import MlflowClient

from app.jobs import CANCELLED, FAILED, FINISHED, QUEUED, JobRegistry
from em3.config import preset, with_overrides
from em3.paths import tracking_uri
from tests.app.fake_training import fake_train


def _cfg(seed: int = 0, epochs: int = 1):
    return with_overrides(preset("tiny"), {"train.seed": seed, "train.epochs": epochs})


def test_jobs_run_in_submission_order_one_at_a_time():
    calls, active, overlap = [], [0], []

    def train(cfg, **kw):
        active[0] += 1
        overlap.append(active[0])
        try:
            return fake_train(cfg, **kw, calls=calls, delay=0.01)
        finally:
            active[0] -= 1

    reg = JobRegistry(train_fn=train)
    ids = [reg.submit(_cfg(seed=s), name=f"run{s}") for s in range(3)]
    snaps = [reg.wait(i, timeout=60) for i in ids]
    assert [s["state"] for s in snaps] == [FINISHED] * 3
    assert calls == ["run0", "run1", "run2"]
    assert max(overlap) == 1                      # one worker: never two runs at once
    assert snaps[0]["ended"] <= snaps[1]["started"]
    client = MlflowClient(tracking_uri=tracking_uri())
    statuses = {client.get_run(s["run_id"]).info.status for s in snaps}
    assert statuses == {"FINISHED"}
    # the live view relays exactly what the run logged (per-step loss, per-epoch validation), not a value of its own
    rid = snaps[0]["run_id"]
    losses = sorted((m.step, m.value) for m in client.get_metric_history(rid, "train/loss"))
    val = sorted((m.step, m.value) for m in client.get_metric_history(rid, "val/auc") if m.step >= 1)
    assert snaps[0]["losses"] == losses and len(losses) == 3
    assert [(e["epoch"], e["val/auc"]) for e in snaps[0]["epochs"]] == val and len(val) == 1
    assert snaps[0]["device"].startswith(("cpu", "cuda"))


def test_cancel_running_job_ends_killed_and_queued_job_never_starts():
    started = threading.Event()

    def train(cfg, **kw):
        started.set()
        return fake_train(cfg, **kw, steps=1000, delay=0.01)

    reg = JobRegistry(train_fn=train)
    running = reg.submit(_cfg(), name="long")
    queued = reg.submit(_cfg(seed=1), name="waiting")
    assert started.wait(30)
    assert reg.get(queued)["state"] == QUEUED
    assert reg.cancel(queued)
    assert reg.get(queued)["state"] == CANCELLED
    time.sleep(0.1)
    assert reg.cancel(running)
    snap = reg.wait(running, timeout=30)
    assert snap["state"] == CANCELLED
    assert MlflowClient(tracking_uri=tracking_uri()).get_run(snap["run_id"]).info.status == "KILLED"
    assert reg.get(queued)["run_id"] is None        # never ran
    assert not reg.cancel(running)                  # already done


def test_failed_run_is_failed_with_its_error():
    reg = JobRegistry(train_fn=lambda cfg, **kw: fake_train(cfg, **kw, fail="loss is NaN at step 2"))
    snap = reg.wait(reg.submit(_cfg()), timeout=30)
    assert snap["state"] == FAILED and "loss is NaN at step 2" in snap["error"]
    run = MlflowClient(tracking_uri=tracking_uri()).get_run(snap["run_id"])
    assert run.info.status == "FAILED" and run.data.tags["em3.error"] == "loss is NaN at step 2"


def test_exception_in_train_fn_fails_the_job_and_worker_survives():
    def train(cfg, **kw):
        if cfg.train.seed == 0:
            raise RuntimeError("data directory vanished")
        return fake_train(cfg, **kw)

    reg = JobRegistry(train_fn=train)
    bad, good = reg.submit(_cfg(0)), reg.submit(_cfg(1))
    assert "RuntimeError: data directory vanished" in reg.wait(bad, timeout=30)["error"]
    assert reg.wait(good, timeout=30)["state"] == FINISHED


def test_two_jobs_submitted_at_once_from_two_threads():
    reg = JobRegistry(train_fn=lambda cfg, **kw: fake_train(cfg, **kw))
    ids: list[str] = []
    barrier = threading.Barrier(2)

    def submit(seed):
        barrier.wait()
        ids.append(reg.submit(_cfg(seed), name=f"tab{seed}"))

    threads = [threading.Thread(target=submit, args=(s,)) for s in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(set(ids)) == 2
    snaps = [reg.wait(i, timeout=60) for i in ids]
    assert all(s["state"] == FINISHED for s in snaps)
    assert len({s["run_id"] for s in snaps}) == 2
    assert {j["id"] for j in reg.jobs()} == set(ids)   # every "tab" sees both


def test_group_submission_tags_every_run():
    reg = JobRegistry(train_fn=lambda cfg, **kw: fake_train(cfg, **kw))
    group, ids = reg.submit_group([_cfg(0), _cfg(1)])
    client = MlflowClient(tracking_uri=tracking_uri())
    runs = [client.get_run(reg.wait(i, timeout=60)["run_id"]) for i in ids]
    assert {r.data.tags["em3.group"] for r in runs} == {group}
    assert {r.data.tags["em3.job"] for r in runs} == set(ids)


def test_cancel_during_the_cache_phase_ends_cancelled_not_failed():
    started = threading.Event()

    def train(cfg, *, hooks, **kw):
        from mlflow.tracking import MlflowClient as Client

        from em3.training.hooks import Cancelled
        from tests.app.fake_training import experiment_id
        client = Client(tracking_uri=tracking_uri())
        run = client.create_run(experiment_id(client), tags=kw.get("tags"))
        started.set()
        try:
            for done in range(1, 3001):                        # a long feature-cache build, batch by batch
                hooks.cache_batch(done, 3000)
                time.sleep(0.01)
        except Cancelled:                                      # what run_training's interrupt handling does
            client.set_terminated(run.info.run_id, "KILLED")
            raise
        return fake_train(cfg, hooks=hooks, **kw)

    reg = JobRegistry(train_fn=train)
    job = reg.submit(_cfg(), name="caching")
    assert started.wait(30)
    time.sleep(0.1)
    assert reg.get(job)["progress"]["phase"] == "cache"
    assert reg.cancel(job)
    snap = reg.wait(job, timeout=30)
    assert snap["state"] == CANCELLED and snap["error"] is None
    assert snap["progress"]["step"] < 3000


def test_on_end_runs_once_per_ended_job_after_its_state_is_final_even_when_it_raises():
    ended = []

    def on_end(job):
        ended.append((job.id, job.state))
        raise RuntimeError("a broken callback")                         # must not stop the worker

    def train(cfg, **kw):
        if cfg.train.seed == 1:
            raise RuntimeError("boom")
        return fake_train(cfg, **kw)

    reg = JobRegistry(train_fn=train, on_end=on_end)
    ok, bad, after = reg.submit(_cfg(0)), reg.submit(_cfg(1)), reg.submit(_cfg(2))
    assert reg.wait(after, timeout=30)["state"] == FINISHED
    assert ended == [(ok, FINISHED), (bad, FAILED), (after, FINISHED)]


def test_a_job_whose_run_was_just_created_is_listed_within_the_run_lists_ttl(fresh_store):
    """CI: the Runs page, opened while the first run trained, said "No runs in the MLflow store yet": its
    run list had been read (empty, cached 10 s) before the run existed."""
    import app.state
    from app import store

    assert store.runs_table(store.uri()).empty                         # cached: no runs
    go, listed = threading.Event(), []
    reg = app.state.make_registry()                                   # as the server builds it

    def train(cfg, **kw):
        hooks = kw["hooks"]
        slow = type(hooks)(on_progress=hooks.on_progress, on_epoch=hooks.on_epoch,
                           should_stop=lambda: not go.wait(30) or hooks.stop_requested())
        return fake_train(cfg, **{**kw, "hooks": slow})

    reg.train_fn = train
    job = reg.submit(_cfg())
    deadline = time.time() + 30
    while not reg.get(job)["run_id"] and time.time() < deadline:
        time.sleep(0.01)
    snap = reg.get(job)
    assert snap["state"] == "running" and snap["run_id"]              # known while it trains, not only at the end
    listed = list(store.runs_table(store.uri())["run_id"])            # within the ttl of the empty read
    go.set()
    assert reg.wait(job, timeout=30)["state"] == FINISHED
    assert listed == [snap["run_id"]]


def test_a_failing_on_run_callback_does_not_fail_the_job():
    seen = []

    def on_run(job):
        seen.append(job.run_id)
        raise RuntimeError("a broken callback")

    reg = JobRegistry(train_fn=lambda cfg, **kw: fake_train(cfg, **kw), on_run=on_run)
    snap = reg.wait(reg.submit(_cfg()), timeout=30)
    assert snap["state"] == FINISHED and seen == [snap["run_id"]]


def test_a_finished_job_drops_the_pages_cached_run_list(fresh_store):
    """The Runs page read the run list through a 10 s cache, and showed a just-finished run as RUNNING."""
    import app.state
    from app import store

    assert store.runs_table(store.uri()).empty                         # cached: no runs
    reg = app.state.make_registry()                                   # as the server builds it
    reg.train_fn = lambda cfg, **kw: fake_train(cfg, **kw)
    snap = reg.wait(reg.submit(_cfg()), timeout=30)
    table = store.runs_table(store.uri())                             # within the ttl, yet fresh
    assert list(table["run_id"]) == [snap["run_id"]] and list(table["status"]) == ["FINISHED"]


def test_the_server_warm_up_runs_once_per_store_and_a_second_caller_waits_for_it(fresh_store, monkeypatch):
    """`make run` warms up at server start (app/serve.py) and the registry's worker again before its first job
    (in a server started otherwise, both may overlap): the second call must wait for the first, redo nothing."""
    import app.state
    import em3.data.prepare

    calls, gate = [], threading.Event()

    def slow_prepare(cfg, **kw):
        calls.append(cfg.data.preset)
        gate.wait(10)

    monkeypatch.setenv("EM3_WARM_DEMO", "1")
    monkeypatch.setattr(em3.data.prepare, "prepare", slow_prepare)
    first = threading.Thread(target=app.state.warm_up)
    first.start()
    deadline = time.time() + 30
    while not calls and time.time() < deadline:
        time.sleep(0.01)
    second = threading.Thread(target=app.state.warm_up)
    second.start()
    second.join(0.3)
    assert second.is_alive()                                    # waits for the warm-up in progress
    gate.set()
    first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive()
    assert calls == [app.state.DEFAULT_PRESET]                    # the demo data was prepared once
