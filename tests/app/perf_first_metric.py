"""Measure Start → first live metric and the whole run (not a test:
`python tests/app/perf_first_metric.py [PRESET] [KEY=VALUE ...]`, e.g. `demo speed.threads=1`).

Mirrors the server: the registry warms up when the app starts (store opened, trainer imported, the
default `demo` preset's data and feature cache built, in a fresh cache directory as on a new machine);
then two Starts of the preset (default tiny, 1 epoch; `demo` = the dashboard's default run, as
configured): the first Start of `tiny` finds a cold feature cache, the first of `demo` the warmed one.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="em3-first-"))
    os.environ["EM3_MLRUNS_DIR"] = str(root / "mlruns")
    os.environ.setdefault("EM3_CACHE_DIR", str(root / "cache"))
    from app.jobs import JobRegistry, default_train_fn
    from app.state import warm_up
    from em3.training.runtime import keep_heap
    from em3.config import parse_set, preset, with_overrides

    t0 = time.time()
    keep_heap()                                   # as app.state.registry() does before the worker starts
    reg = JobRegistry(train_fn=default_train_fn, warmup=warm_up)
    while reg.warming:
        time.sleep(0.1)
    print(f"warm-up at app start (store, trainer imports, demo data and feature cache): {time.time() - t0:.1f} s")
    name = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    extra = parse_set(sys.argv[2:])
    for label in ("first Start", "second Start"):
        cfg = with_overrides(preset(name), {"train.epochs": 1}) if name == "tiny" else preset(name)
        cfg = with_overrides(cfg, extra) if extra else cfg
        snap = reg.wait(reg.submit(cfg), timeout=900)
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in snap["phases"].items())
        print(f"{label}: first live metric {snap['first_metric_s']:.1f} s after Start; "
              f"done {snap['ended'] - snap['submitted']:.1f} s; phases: {phases}; {snap['state']}")


if __name__ == "__main__":
    main()
