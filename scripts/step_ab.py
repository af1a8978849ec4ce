"""Two configs' em3 MovieLens training steps interleaved in one process: the step-time ratio of a lever.

    python scripts/step_ab.py --b speed.fold_token_proj=false [--a K=V ...] [--arm em3] [--steps 20] [--threads 2]

Builds model A (the `movielens` preset with --a overrides) and model B (with --b) from the same seed, then
trains them on the same batches, alternating A, B, A, B, ... so both see the same machine load; prints one
JSON line with the median step of each (after 3 warm-up steps each), their ratio, each step's FLOPs
(torch's FlopCounterMode over forward + backward of the first batch) and both losses at the end (each step
reseeds torch, so for an exact lever that draws the same dropout masks they agree to float rounding). Not a bench row: `python -m em3 bench speed` times whole epochs.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from em3.bench.speed_probe import step_setup
from em3.config import parse_set, preset, with_arm, with_overrides
from em3.training.batches import to_batch
from em3.training.fit import compute_loss


def _step(model, opt, batch, cfg) -> float:
    loss, _, _ = compute_loss(model(batch), batch["label"], cfg)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--b", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--arm", default="em3")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    base = with_overrides(with_arm(preset("movielens"), a.arm), {"speed.threads": a.threads})
    runs = {}
    for name, sets in (("a", a.a), ("b", a.b)):
        cfg = with_overrides(base, parse_set(sets))
        samples, model, opt, batches = step_setup(cfg, steps=a.steps)
        runs[name] = dict(cfg=cfg, model=model, opt=opt, times=[], loss=None)
    dev = torch.device("cpu")
    first = to_batch(samples, batches[0], dev)
    for r in runs.values():
        torch.manual_seed(len(batches))
        with FlopCounterMode(display=False) as fc:
            _step(r["model"], r["opt"], first, r["cfg"])
        r["gflop"] = fc.get_total_flops() / 1e9
    for i, rows in enumerate(batches):
        batch = to_batch(samples, rows, dev)
        for r in runs.values():
            torch.manual_seed(i)          # the same dropout masks for both (where both draw the same shapes)
            t = time.perf_counter()
            r["loss"] = _step(r["model"], r["opt"], batch, r["cfg"])
            r["times"].append(time.perf_counter() - t)
    med = {k: sorted(r["times"][3:])[len(r["times"][3:]) // 2] for k, r in runs.items()}
    print(json.dumps({"arm": a.arm, "a": a.a, "b": a.b, "threads": torch.get_num_threads(), "steps": len(batches),
                      "median_step_s": {k: round(v, 4) for k, v in med.items()},
                      "b_over_a": round(med["b"] / med["a"], 3),
                      "gflop_per_step": {k: round(r["gflop"], 2) for k, r in runs.items()},
                      "last_loss": {k: round(r["loss"], 6) for k, r in runs.items()}}), flush=True)


if __name__ == "__main__":
    main()
