"""Measure Start → first live metric on the tiny preset (not a test: `python tests/app/perf_first_metric.py`).

Mirrors the server: the registry warms up (store opened, trainer imported) when the app starts;
then two Starts of the tiny preset, the first with a cold feature cache, the second warm.
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
    from app import store
    from app.jobs import JobRegistry, default_train_fn, warm_imports
    from em3.config import preset, with_overrides

    t0 = time.time()
    reg = JobRegistry(train_fn=default_train_fn, warmup=lambda: (store.client(store.uri()), warm_imports()))
    while reg.warming:
        time.sleep(0.1)
    print(f"warm-up at app start (store + trainer imports): {time.time() - t0:.1f} s")
    for label in ("cold feature cache", "warm feature cache"):
        cfg = with_overrides(preset("tiny"), {"train.epochs": 1})
        snap = reg.wait(reg.submit(cfg), timeout=900)
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in snap["phases"].items())
        print(f"{label}: first live metric {snap['first_metric_s']:.1f} s after Start; "
              f"done {snap['ended'] - snap['submitted']:.1f} s; phases: {phases}; {snap['state']}")


if __name__ == "__main__":
    main()
