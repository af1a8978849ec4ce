"""Measure each page's render time on a store of N runs (not a test: `python tests/app/perf_pages.py [--runs 1000]`).

Creates N fake runs fast (one log_batch each: params, tags, 40 loss steps, 5 epochs of val
metrics, final metrics; 3 em3 runs with explain/ artifacts, CIC space included) in a temp store, waits
for the server-side warm-up (store, trainer imports, demo data) a Launch render starts, then renders
every page with AppTest three times:

- first: the page's first render in this process (later pages find what earlier ones cached);
- cold: after `st.cache_data.clear()`, what a visit costs once the pages' short caches (3-60 s) expired;
- warm: again at once, from those caches.

Prints wall and CPU seconds per render, the load average, and a markdown table for docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
PAGES = ("launch", "ablations", "runs", "attention", "alignment", "recommendations")
EXPLAINED = 3   # runs with explain/ artifacts (the Look-inside pages scan every run for them)


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
        explained = i < EXPLAINED
        arm, seed = ("em3" if explained else arms[i % len(arms)]), i // len(arms) % 3
        cfg = preset("tiny", arm)
        run = client.create_run(exp, run_name=f"bench-{i:04d}")
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
        if explained:
            client.log_text(rid, json.dumps(to_dict(cfg)), "config.json")
            write_explain(client, rid, seed=i, cic=True, content_attention=True)
        client.set_terminated(rid, "FINISHED")


def _wait_warmup(timeout: float = 600.0) -> float:
    """Seconds until the job registry's warm-up thread (started by the first Launch render) is done."""
    import app.state
    t0 = time.perf_counter()
    reg = app.state.registry()   # the same cache_resource object the AppTest scripts got
    while reg.warming and time.perf_counter() - t0 < timeout:
        time.sleep(0.2)
    return time.perf_counter() - t0


def _render(page: str) -> tuple[float, float]:
    """(wall, CPU) seconds of rendering `page`; the app's default page (Launch) is loaded first, untimed."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=300)
    at.run()
    t, c = time.perf_counter(), time.process_time()
    if page != "launch":
        at.switch_page(f"../pages/{page}.py").run()
    else:
        at.run()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    assert not at.exception, [e.value for e in at.exception]
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?", help="folder for the store (reused if it holds one); default a temp dir")
    parser.add_argument("--runs", type=int, default=100, help="runs to create in a new store (default 100)")
    args = parser.parse_args()
    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="em3-perf-"))
    os.environ["EM3_MLRUNS_DIR"] = str(root / "mlruns")
    os.chdir(REPO)
    if not (root / "mlruns" / "mlflow.db").exists():   # reuse a store made by an earlier call
        t0 = time.time()
        make_runs(args.runs)
        print(f"created {args.runs} runs in {time.time() - t0:.1f} s under {root}")
    import streamlit as st

    _render("launch")                                  # starts the registry's warm-up, as a server's first page does
    print(f"warm-up (store, trainer imports, demo data) done {_wait_warmup():.1f} s after the first Launch render")
    load = os.getloadavg()
    rows = []
    for page in PAGES:
        first = _render(page)
        st.cache_data.clear()
        cold = _render(page)
        warm = _render(page)
        rows.append((page, first, cold, warm))
        print(f"{page:16s} first {first[0]:.2f} s  cold {cold[0]:.2f} s (cpu {cold[1]:.2f})  "
              f"warm {warm[0]:.2f} s (cpu {warm[1]:.2f})", flush=True)
    load_end = os.getloadavg()
    print(f"\nload average (1/5/15 min) before {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, "
          f"after {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}; {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
    print(f"| page ({args.runs} runs) | first in process | cold (caches expired) | warm |")
    print("| --- | --- | --- | --- |")
    for page, first, cold, warm in rows:
        print(f"| {page.capitalize()} | {first[0]:.2f} s | {cold[0]:.2f} s | {warm[0]:.2f} s |")


if __name__ == "__main__":
    main()
