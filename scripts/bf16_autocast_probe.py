"""How much bf16 autocast beyond the token store would give an em3 MovieLens step (a probe, not a lever yet).

    python scripts/bf16_autocast_probe.py [--steps 20] [--threads 2]

Three copies of the `movielens` preset's em3 model from the same seed, trained on the same batches in
turn (plain, plain-with-the-ranker-under-autocast, the-whole-forward-under-autocast), so all three see the
same machine load; prints the median step (after 3 warm-up steps) and the last loss of each. The token store
and its projection already run in `speed.compute_dtype` (bf16 where the CPU has bf16 matmuls); this asks what
the fp32 rest (DIN's attention units and MLP, the Fusion-Q-Former) would give under
`torch.autocast("cpu", dtype=torch.bfloat16)`. Only meaningful on a CPU with native bf16 (em3.models.precision).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from em3.bench.speed_probe import step_setup
from em3.config import preset, with_arm, with_overrides
from em3.training.batches import to_batch
from em3.training.fit import compute_loss

VARIANTS = ("plain", "ranker_bf16", "all_bf16")


def _autocast_ranker(model: torch.nn.Module) -> None:
    plain = model.ranker.forward

    def forward(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return plain(*args, **kwargs)
    model.ranker.forward = forward


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    cfg = with_overrides(with_arm(preset("movielens"), "em3"), {"speed.threads": a.threads})
    dev = torch.device("cpu")
    runs = {}
    for name in VARIANTS:
        torch.manual_seed(0)
        samples, model, opt, batches = step_setup(cfg, steps=a.steps)
        if name == "ranker_bf16":
            _autocast_ranker(model)
        runs[name] = {"model": model, "opt": opt, "times": [], "loss": None}
    for rows in batches:
        batch = to_batch(samples, rows, dev)
        for name, r in runs.items():
            t = time.perf_counter()
            torch.manual_seed(1)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "all_bf16"):
                out = r["model"](batch)
            loss, _, _ = compute_loss(out, batch["label"], cfg)
            r["opt"].zero_grad()
            loss.backward()
            r["opt"].step()
            r["times"].append(time.perf_counter() - t)
            r["loss"] = float(loss.detach())
    base = statistics.median(runs["plain"]["times"][3:])
    for name, r in runs.items():
        step = statistics.median(r["times"][3:])
        print(f"{name}: median step {step:.4f} s ({step / base:.2f}x plain), last loss {r['loss']:.4f}")


if __name__ == "__main__":
    main()
