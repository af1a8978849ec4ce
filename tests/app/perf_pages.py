"""Measure each page's render time with 100 runs in the store (not a test: `python tests/app/perf_pages.py`).

Creates 100 fake runs fast (one log_batch each: params, tags, 40 loss steps, 5 epochs of val
metrics, final metrics; 3 of them with explain/ artifacts) in a temp store, then renders every
page with AppTest twice (cold: first render in the process; warm: the cached second render).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def make_runs(n: int = 100) -> None:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from em3.config import ARMS, flatten, preset, to_dict
    from em3.paths import tracking_uri
    from tests.app.fake_training import experiment_id, write_explain

    client = MlflowClient(tracking_uri=tracking_uri())
    exp = experiment_id(client)
    arms = list(ARMS)[:4]
    now = int(time.time() * 1000)
    for i in range(n):
        arm, seed = arms[i % len(arms)], i // len(arms) % 3
        cfg = preset("tiny", arm)
        run = client.create_run(exp, run_name=f"bench-{i:03d}")
        rid = run.info.run_id
        tags = {"em3.arm": arm, "em3.ranker": "din", "em3.dataset": "synthetic-tiny", "em3.kind": "ctr",
                "em3.group": f"bench-{i // 12}", "em3.config_version": "1", "em3.device": "cpu"}
        metrics = [Metric("train/loss", 0.7 - 0.005 * s, now, s) for s in range(40)]
        metrics += [Metric(k, v + 0.01 * e, now, e) for e in range(1, 6)
                    for k, v in (("val/auc", 0.6), ("val/gauc", 0.55), ("val/logloss", 0.65))]
        metrics += [Metric(f"{s}/{m}", v + 0.001 * (i % 7), now, 0) for s in ("test", "test_cold")
                    for m, v in (("auc", 0.7), ("gauc", 0.62), ("logloss", 0.6))]
        params = [Param(k, str(v)) for k, v in flatten(cfg).items()]
        client.log_batch(rid, metrics=metrics, params=params, tags=[RunTag(k, v) for k, v in tags.items()])
        if i < 3:
            client.log_text(rid, json.dumps(to_dict(cfg)), "config.json")
            write_explain(client, rid, seed=i)
        client.set_terminated(rid, "FINISHED")


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="em3-perf-"))
    os.environ["EM3_MLRUNS_DIR"] = str(root / "mlruns")
    os.chdir(REPO)
    if not (root / "mlruns" / "mlflow.db").exists():   # reuse a store made by an earlier call
        t0 = time.time()
        make_runs(100)
        print(f"created 100 runs in {time.time() - t0:.1f} s under {root}")
    from streamlit.testing.v1 import AppTest
    for page in ("launch", "ablations", "runs", "attention", "alignment", "recommendations"):
        times = []
        for _ in range(2):
            at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=120)
            at.run()
            t = time.time()
            if page != "launch":
                at.switch_page(f"../pages/{page}.py").run()
            else:
                at.run()
            times.append(time.time() - t)
            assert not at.exception, [e.value for e in at.exception]
        print(f"{page:16s} cold {times[0]:.2f} s  warm {times[1]:.2f} s")


if __name__ == "__main__":
    main()
