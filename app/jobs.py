"""The in-process job registry: a FIFO queue of training runs executed by one background worker.

The worker thread never calls Streamlit. Pages read `Job.snapshot()` (a plain dict copy taken
under the job's lock) and poll it with `st.fragment(run_every=...)`. One registry lives per
server process (`app.state.registry()` wraps it in `st.cache_resource`), so every page,
refresh and browser tab sees the same jobs.
"""
from __future__ import annotations

import itertools
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from em3.arms import arm_label, arm_of
from em3.config import Config
from em3.training.hooks import Cancelled, Hooks

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED = "queued", "running", "finished", "failed", "cancelled"
DONE_STATES = (FINISHED, FAILED, CANCELLED)

TrainFn = Callable[..., Any]   # run_training(cfg, *, hooks, tags, run_name) -> RunResult


def default_train_fn(cfg: Config, **kwargs: Any) -> Any:
    """The real trainer, imported lazily so the app starts before torch is loaded."""
    from em3.training.run import run_training
    return run_training(cfg, **kwargs)


def warm_imports() -> None:
    """Import the trainer (torch, transformers, peft: tens of seconds on a busy CPU) ahead of the first job."""
    import em3.training.run  # noqa: F401


def describe_device(requested: str) -> str:
    """'cuda (NVIDIA H200)' or 'cpu (no CUDA GPU found)': what the worker will train on."""
    import torch  # the app layer may use torch; pages may not
    if requested == "cpu":
        return "cpu (requested)"
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu (no CUDA GPU found)" if requested == "auto" else "cuda requested but no CUDA GPU found"


@dataclass
class Job:
    """One queued training run and its live progress (mutated by the worker under `lock`)."""

    id: str
    cfg: Config
    name: str
    tags: dict[str, str]
    group: str | None = None
    resume_run_id: str | None = None        # continue this MLflow run from its last checkpoint
    state: str = QUEUED
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    run_id: str | None = None
    error: str | None = None
    device: str = ""
    progress: dict[str, Any] = field(default_factory=dict)   # latest Progress as a dict
    losses: list[tuple[int, float]] = field(default_factory=list)   # (global step, loss)
    epochs: list[dict[str, float]] = field(default_factory=list)    # per epoch: {"epoch": e, "val/auc": ...}
    metrics: dict[str, float] = field(default_factory=dict)         # final metrics
    first_metric_s: float | None = None      # seconds from submission (the Start click) to the first live metric
    phases: dict[str, float] = field(default_factory=dict)          # phase -> seconds from submission when first seen
    cancel_requested: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, Any]:
        """A consistent plain copy for the UI thread."""
        with self.lock:
            return {
                "id": self.id, "name": self.name, "state": self.state, "group": self.group,
                "arm": arm_label(arm_of(self.cfg), self.cfg.model.arm), "dataset": self.tags.get("em3.dataset", ""),
                "submitted": self.submitted, "started": self.started, "ended": self.ended,
                "run_id": self.run_id, "error": self.error, "device": self.device,
                "progress": dict(self.progress), "losses": list(self.losses),
                "epochs": [dict(e) for e in self.epochs], "metrics": dict(self.metrics),
                "first_metric_s": self.first_metric_s, "phases": dict(self.phases),
                "cancel_requested": self.cancel_requested, "resume_run_id": self.resume_run_id,
            }


def _as_dict(progress: Any) -> dict[str, Any]:
    if isinstance(progress, dict):
        return dict(progress)
    return {k: v for k, v in vars(progress).items() if not k.startswith("_")}


class JobRegistry:
    """Jobs by id, a FIFO queue and one daemon worker thread that runs them in order."""

    def __init__(self, *, train_fn: TrainFn = default_train_fn, warmup: Callable[[], Any] | None = None,
                 on_end: Callable[["Job"], Any] | None = None, on_run: Callable[["Job"], Any] | None = None,
                 max_jobs: int = 500) -> None:
        self.train_fn = train_fn
        self._warmup = warmup
        self._on_end = on_end                 # called once a job has ended (the pages drop their cached store reads)
        self._on_run = on_run                 # called once a job's MLflow run exists (the run list must show it)
        self.warming = warmup is not None     # True while the worker imports the trainer
        self.max_jobs = max_jobs
        self._jobs: dict[str, Job] = {}
        self._queue: deque[str] = deque()
        self._cond = threading.Condition()
        self._counter = itertools.count(1)
        self._worker = threading.Thread(target=self._work, name="em3-job-worker", daemon=True)
        self._worker.start()

    # ---- UI side ---------------------------------------------------------------------------

    def submit(self, cfg: Config, *, tags: dict[str, str] | None = None, name: str | None = None,
               group: str | None = None, resume_run_id: str | None = None) -> str:
        """Queue one run (or the resumption of an interrupted one); returns the job id."""
        job_id = f"j{next(self._counter):04d}-{uuid.uuid4().hex[:6]}"
        all_tags = {**(tags or {}), "em3.job": job_id}
        if group:
            all_tags["em3.group"] = group
        job = Job(id=job_id, cfg=cfg, name=name or f"{cfg.model.arm}-s{cfg.train.seed}", tags=all_tags, group=group,
                  resume_run_id=resume_run_id)
        with self._cond:
            self._jobs[job_id] = job
            self._queue.append(job_id)
            self._forget_old()
            self._cond.notify()
        return job_id

    def submit_group(self, cfgs: list[Config], *, tags: dict[str, str] | None = None,
                     prefix: str = "ablation") -> tuple[str, list[str]]:
        """Queue a grid as one group (one `em3.group` tag on every run); returns (group, job ids)."""
        group = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        ids = [self.submit(c, tags=tags, group=group, name=f"{group}/{c.model.arm}-s{c.train.seed}") for c in cfgs]
        return group, ids

    def cancel(self, job_id: str) -> bool:
        """Queued → cancelled at once; running → flag read by Hooks.should_stop in every phase (run ends KILLED)."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state in DONE_STATES:
                return False
            with job.lock:
                job.cancel_requested = True
                if job.state == QUEUED:
                    job.state, job.ended = CANCELLED, time.time()
            if job_id in self._queue and job.state == CANCELLED:
                self._queue.remove(job_id)
        return True

    def jobs(self) -> list[dict[str, Any]]:
        """Snapshots of every job, newest first."""
        with self._cond:
            jobs = list(self._jobs.values())
        return [j.snapshot() for j in sorted(jobs, key=lambda j: j.submitted, reverse=True)]

    def get(self, job_id: str) -> dict[str, Any] | None:
        job = self._jobs.get(job_id)
        return job.snapshot() if job else None

    def wait(self, job_id: str, *, timeout: float = 600.0) -> dict[str, Any]:
        """Block until the job is done (tests, scripts); raises TimeoutError naming the job."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            snap = self.get(job_id)
            if snap is None:
                raise KeyError(f"unknown job {job_id!r}")
            if snap["state"] in DONE_STATES:
                return snap
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} still {self.get(job_id)['state']} after {timeout:.0f} s")

    def _forget_old(self) -> None:
        done = [j for j in self._jobs.values() if j.state in DONE_STATES]
        for job in sorted(done, key=lambda j: j.submitted)[: max(0, len(self._jobs) - self.max_jobs)]:
            del self._jobs[job.id]

    # ---- worker side -----------------------------------------------------------------------

    def _work(self) -> None:
        if self._warmup is not None:
            try:   # import torch & co. now, not after the first Start click
                self._warmup()
            except Exception:  # noqa: BLE001 - a failing import resurfaces as the first job's error
                pass
        self.warming = False
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                job = self._jobs[self._queue.popleft()]
            self._run(job)

    def _run(self, job: Job) -> None:
        with job.lock:
            if job.state != QUEUED:
                return
            job.state, job.started = RUNNING, time.time()
        try:
            self._train(job)
        finally:
            if self._on_end is not None and job.state in DONE_STATES:
                self._callback(self._on_end, job)

    @staticmethod
    def _callback(fn: Callable[["Job"], Any], job: Job) -> None:
        try:
            fn(job)
        except Exception:  # noqa: BLE001 - a failing callback must not kill the worker
            traceback.print_exc()

    def _train(self, job: Job) -> None:
        try:
            job.device = describe_device(job.cfg.train.device)
        except Exception as exc:  # noqa: BLE001 - device probing must not kill the worker
            job.device = f"unknown ({exc})"
        hooks = Hooks(on_progress=lambda p: self._on_progress(job, p),
                               on_epoch=lambda e, m: self._on_epoch(job, e, m),
                               should_stop=lambda: job.cancel_requested)
        try:
            resume = {"resume_run_id": job.resume_run_id} if job.resume_run_id else {}
            result = self.train_fn(job.cfg, hooks=hooks, tags=dict(job.tags), run_name=job.name, **resume)
        except Cancelled:   # a cancel outside fit (cache, evaluation, explain): the run is KILLED, the job cancelled
            with job.lock:
                job.state, job.ended = CANCELLED, time.time()
            return
        except BaseException as exc:  # noqa: BLE001 - any training error, even SystemExit, fails the job, not the worker
            with job.lock:
                job.state, job.ended = FAILED, time.time()
                job.error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=6)}"
            return
        status = str(getattr(result, "status", "FINISHED")).upper()
        with job.lock:
            job.run_id = getattr(result, "run_id", None)
            job.metrics = dict(getattr(result, "metrics", {}) or {})
            job.ended = time.time()
            if status == "KILLED" or (job.cancel_requested and status != "FINISHED"):
                job.state = CANCELLED
            elif status == "FAILED":
                job.state = FAILED
                job.error = getattr(result, "error", None) or "the run failed without an error message"
            else:
                job.state = FINISHED

    def _on_progress(self, job: Job, progress: Any) -> None:
        snap = _as_dict(progress)
        with job.lock:
            job.progress = snap
            if snap.get("phase") and snap["phase"] not in job.phases:
                job.phases[snap["phase"]] = time.time() - job.submitted
            loss, step = snap.get("loss"), snap.get("step")
            epoch, per_epoch = snap.get("epoch") or 0, snap.get("steps_per_epoch") or 0
            if snap.get("phase") == "train" and loss is not None and loss == loss and step is not None:
                global_step = max(int(epoch) - 1, 0) * int(per_epoch) + int(step) if per_epoch else int(step)
                if not job.losses or job.losses[-1][0] != global_step:
                    job.losses.append((global_step, float(loss)))
                if job.first_metric_s is None:
                    job.first_metric_s = time.time() - job.submitted
            new_run = bool(snap.get("run_id")) and not job.run_id
            if new_run:
                job.run_id = snap["run_id"]
        if new_run and self._on_run is not None:
            self._callback(self._on_run, job)

    def _on_epoch(self, job: Job, epoch: int, metrics: dict[str, float]) -> None:
        with job.lock:
            job.epochs.append({"epoch": int(epoch), **{k: float(v) for k, v in metrics.items()}})
            if job.first_metric_s is None:
                job.first_metric_s = time.time() - job.submitted
