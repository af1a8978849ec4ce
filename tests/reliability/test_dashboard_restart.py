"""The dashboard server restarted while a job trains: afterwards the Runs page shows the run as interrupted (not
running) with a Resume action, and Resume continues it from its last checkpoint to FINISHED."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from streamlit.testing.v1 import AppTest

from em3 import paths

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "app" / "main.py"

# The "old server": the dashboard's own job registry running a real job in its worker thread.
OLD_SERVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from app.jobs import JobRegistry, default_train_fn
    from em3.config import preset, with_overrides
    cfg = with_overrides(preset("tiny", "id_only"), {"train.epochs": 3, "train.patience": 0})
    reg = JobRegistry(train_fn=default_train_fn)
    job = reg.submit(cfg, name="restart-me", tags={"em3.launched_from": "dashboard"})
    print(job, flush=True)
    reg.wait(job, timeout=900)
""")


def _texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("info", "error", "warning", "caption", "markdown", "success")
                     for e in getattr(at, kind))


def _stored_checkpoint(store: Path) -> bool:
    """A whole last.pt in the artifact store. The sidecar is uploaded before its file (run.py), so waiting for the
    sidecar alone once killed the server between the two, and Resume found no last.pt (session 19's fresh clone)."""
    for side in store.glob("artifacts/*/artifacts/checkpoint/last.pt.json"):
        pt = side.with_name("last.pt")
        try:
            if pt.is_file() and pt.stat().st_size == json.loads(side.read_text())["size"]:
                return True
        except (OSError, ValueError, KeyError):      # a sidecar mid-copy
            continue
    return False


def test_a_restarted_server_shows_the_run_interrupted_with_a_working_resume(fresh_store: Path):
    old = subprocess.Popen([sys.executable, "-c", OLD_SERVER, str(REPO)], cwd=REPO, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 400
        while not _stored_checkpoint(fresh_store):
            assert old.poll() is None and time.time() < deadline, old.stderr.read()[-3000:] if old.stderr else ""
            time.sleep(0.05)
        os.kill(old.pid, signal.SIGKILL)                       # the server dies with its worker thread
        old.wait(timeout=60)
    finally:
        if old.poll() is None:
            old.kill()
    client = MlflowClient(tracking_uri=paths.tracking_uri())
    run = client.search_runs([client.get_experiment_by_name("em3").experiment_id])[0]
    assert run.info.status == "RUNNING"

    # the new server: a fresh session opens the Runs page
    from app import state, store
    store.runs_table.clear()
    state.registry.clear()
    at = AppTest.from_file(str(MAIN), default_timeout=180)
    at.run()
    at.switch_page("../pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert table.loc[table["run_id"] == run.info.run_id, "status"].tolist() != ["RUNNING"]
    at.multiselect(key="runs-pick").set_value([run.info.run_id]).run()
    assert "interrupted" in _texts(at).lower()
    resume = [b for b in at.button if b.key == f"resume-{run.info.run_id}"]
    assert resume, [b.key for b in at.button]
    resume[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    snaps = [j for j in state.registry().jobs() if j.get("resume_run_id") == run.info.run_id]
    assert len(snaps) == 1
    done = state.registry().wait(snaps[0]["id"], timeout=600)
    assert done["state"] == "finished", done["error"]
    final = client.get_run(run.info.run_id)
    assert final.info.status == "FINISHED" and "test/auc" in final.data.metrics
    assert sorted({m.step for m in client.get_metric_history(run.info.run_id, "val/auc")}) == [1, 2, 3]
