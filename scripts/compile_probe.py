"""Steady-state seconds per em3 MovieLens training step, eager or with speed.compile, and what compilation costs.

    python scripts/compile_probe.py --compile both --steps 20 --threads 2 [--arm em3] [--no-fast-dropout]

Trains `--steps` optimiser steps of the `movielens` preset (batch 1024) in this process and prints one JSON
line: the first 3 step times (the compiled ones include compilation) and the median of the rest. Not a bench
row: `python -m em3 bench speed` times whole epochs with FLOPs; this isolates a step, which is what compile
changes. Run it on a quiet box, eager and compiled one after the other.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from em3.bench.speed_probe import step_setup
from em3.config import COMPILE_TARGETS, preset, with_arm, with_overrides
from em3.training.batches import to_batch
from em3.training.fit import compute_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compile", default="off", choices=COMPILE_TARGETS)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--arm", default="em3")
    p.add_argument("--no-fast-dropout", action="store_true")
    a = p.parse_args()
    sets = {"speed.compile": a.compile, "speed.threads": a.threads}
    if a.no_fast_dropout:
        sets["speed.fast_dropout"] = False
    cfg = with_overrides(with_arm(preset("movielens"), a.arm), sets)
    samples, model, opt, batches = step_setup(cfg, steps=a.steps)
    times = []
    for r in batches:
        t = time.perf_counter()
        batch = to_batch(samples, r, torch.device("cpu"))
        loss, _, _ = compute_loss(model(batch), batch["label"], cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    rest = sorted(times[3:])
    print(json.dumps({"compile": a.compile, "arm": a.arm, "fast_dropout": cfg.speed.fast_dropout,
                      "threads": torch.get_num_threads(), "first3_s": [round(x, 2) for x in times[:3]],
                      "median_step_s": round(rest[len(rest) // 2], 3) if rest else None, "steps": len(times),
                      "last_loss": round(float(loss.detach()), 6)}), flush=True)


if __name__ == "__main__":
    main()
