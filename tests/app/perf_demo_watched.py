"""What watching costs: the default demo run with the Launch page open in Chromium, and without (not a test).

    python tests/app/perf_demo_watched.py [--modes watched,unwatched] [--dataset demo|movielens] [--out figures.json]

`--dataset movielens` presses Start on the MovieLens-100K defaults instead (EM3_MOVIELENS_DIR), with the
feature cache of EM3_CACHE_DIR as it is (encoding the posters and plots anew would take minutes).

Each mode is a new user's first run: a fresh feature cache built as `make run` builds it, a fresh server
(`python -m app.serve`, as `make run`), Chromium opening the Launch page and pressing Start on the defaults.
`watched` then keeps the page open, as a user does; `unwatched` opens about:blank once the job is queued
(the in-process job goes on; the page is opened again at the end to read the job's first-metric time).
The run's end is read from the MLflow store (its end_time), so the waiting itself touches no page. CPU
seconds are summed over the server process and over every Chromium process while the run lasts: they say
where a watched run's extra time goes. Timings are only figures on a quiet box (nothing else heavy running).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:   # a renderer that ended: its time is lost, say so by being a lower bound
            pass
    return total


def _chromium(driver) -> list[psutil.Process]:
    root = psutil.Process(driver.service.process.pid)   # chromedriver; Chromium's processes are below it
    return [root, *root.children(recursive=True)]


def _finished_run(db: Path) -> tuple[str, float] | None:
    """(status, end_time in s) of the store's one run once it has ended, else None."""
    if not db.exists():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        try:
            row = con.execute("select status, end_time from runs order by start_time desc limit 1").fetchone()
        except sqlite3.OperationalError:    # the schema is still being created
            return None
    if row and row[0] != "RUNNING" and row[1]:
        return row[0], row[1] / 1000.0
    return None


def one_run(mode: str, dataset: str = "demo") -> dict[str, object]:
    import test_app_browser as tb   # the browser test's helpers: server start, clicks, waits

    tmp = Path(tempfile.mkdtemp(prefix=f"em3-watch-{mode}-"))
    if dataset == "movielens":
        if not os.environ.get("EM3_MOVIELENS_DIR"):
            raise SystemExit("--dataset movielens: set EM3_MOVIELENS_DIR (and EM3_CACHE_DIR to a built feature cache)")
        env = {}
    else:
        env = tb.new_user_env(tmp)
    driver = tb.new_driver()
    try:
        with tb._serve(tmp, **env) as (base, _):
            server = psutil.Process(_server_pid(base))
            driver.get(base)
            tb._wait_text(driver, "Launch a run", 120)
            if dataset == "movielens":
                tb._click(driver, "//label[.//p[contains(text(),'MovieLens')]]")
                tb._wait_text(driver, "Dataset directory", 60)
            tb._idle(driver, 120)
            cpu0 = {"server": _cpu_seconds([server, *server.children(recursive=True)]),
                    "chromium": _cpu_seconds(_chromium(driver))}
            clicked = time.time()
            tb._click(driver, "//button[.//p[text()='Start']]")
            tb._wait_text(driver, "Queued job", 120)
            if mode == "unwatched":
                driver.get("about:blank")
            print(f"{mode}: queued {time.time() - clicked:.1f} s after Start; waiting for the run to end", flush=True)
            db = tmp / "mlruns" / "mlflow.db"
            while (done := _finished_run(db)) is None:
                if time.time() - clicked > 1800:
                    raise TimeoutError(f"{mode}: the {dataset} run did not end within 30 min")
                time.sleep(1.0)
            status, ended = done
            cpu = {"server": _cpu_seconds([server, *server.children(recursive=True)]) - cpu0["server"],
                   "chromium": _cpu_seconds(_chromium(driver)) - cpu0["chromium"]}
            wall = ended - clicked
            driver.get(base)
            tb._wait_text(driver, "first live metric after", 120)
            first = re.search(r"first live metric after ([\d.]+) s", tb._body(driver))
    finally:
        driver.quit()
    return {"mode": mode, "dataset": dataset, "status": status, "start_to_end_s": round(wall, 1),
            "first_live_metric_s": float(first.group(1)) if first else None,
            "server_cpu_s": round(cpu["server"], 1), "chromium_cpu_s": round(cpu["chromium"], 1),
            "load_avg_after": [round(x, 2) for x in os.getloadavg()]}


def _server_pid(base: str) -> int:
    port = int(base.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return conn.pid
    raise RuntimeError(f"no process listens on port {port}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="watched,unwatched", help="comma list of watched, unwatched (run in order)")
    ap.add_argument("--dataset", choices=("demo", "movielens"), default="demo",
                    help="the run Start launches: the demo defaults, or MovieLens-100K's (EM3_MOVIELENS_DIR)")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in ("watched", "unwatched"):
            raise SystemExit(f"--modes: {m!r} is not one of watched, unwatched")
    rows = []
    for m in modes:
        rows.append(one_run(m, args.dataset))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
