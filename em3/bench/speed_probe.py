"""One row of the speed bench in a fresh process: one training epoch, its validation and the final top-K
ranking a run ends with, timed, with FLOPs.

Run as `python -m em3.bench.speed_probe '<json spec>'`; prints one `SPEED {json}` line. The matmul
peaks (fp32 and bf16) are measured in the same process, right before the epoch, so the row's
utilisation is judged against what this process could do at that moment.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

import torch


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: config (to_dict; its train.epochs is ignored: one epoch), flops_batches. Returns the row."""
    from dataclasses import replace

    from em3.bench.flops import count_flops_by_dtype, dtype_peaks
    from em3.config import from_dict
    from em3.evaluation.recommend import evaluate_topk, topk_users
    from em3.models.precision import resolve_compute_dtype
    from em3.training.batches import to_batch
    from em3.training.distributed import resolve_device
    from em3.training.fit import compute_loss, fit
    from em3.training.memory import PeakMemory
    from em3.training.runtime import configure_run

    cfg = from_dict(spec["config"])
    cfg = replace(cfg, train=replace(cfg.train, epochs=1, patience=0))
    configure_run(cfg)
    device = resolve_device(cfg.train.device)
    # The bf16 peak only where a row can run bf16 (dtype_peaks: emulated bf16 takes minutes to time)
    peaks = {"bf16": float("nan"), **dtype_peaks(device, resolve_compute_dtype(cfg.speed.compute_dtype))}
    with PeakMemory(device) as memory:
        samples, model, _, batches = step_setup(cfg, steps=cfg.train.max_steps_per_epoch, device=device)

        def step(rows) -> None:        # forward + backward, no update (the weights stay as initialised)
            batch = to_batch(samples, rows, device)
            loss, _, _ = compute_loss(model(batch), batch["label"], cfg)
            loss.backward()

        split = [count_flops_by_dtype(lambda r=r: step(r)) for r in batches[:spec.get("flops_batches", 2)]]
        model.zero_grad(set_to_none=True)
        metrics: dict[str, float] = {}
        state, _ = fit(model, samples, cfg, device=device, on_epoch_end=lambda st, m, opt: metrics.update(m))
        # the top-K ranking a run ends with (run.py: the same users), after this one epoch
        users = topk_users(samples, sample=cfg.train.topk_users, seed=cfg.train.seed)
        t0 = time.perf_counter()
        evaluate_topk(model, samples, k=cfg.train.topk, device=device, users=users)
        topk_s = time.perf_counter() - t0
    by_dtype = {name: sum(c.get(name, 0) for c in split) / len(split) for name in sorted({k for c in split for k in c})}
    flops = sum(by_dtype.values())
    steps = len(batches)
    achieved = flops * steps / state.train_seconds
    n_train, n_total = model.count_parameters()
    return {"train_epoch_s": state.train_seconds, "val_epoch_s": state.val_seconds, "topk_s": topk_s,
            "topk_users": len(users), "steps": steps,
            "batch_size": cfg.train.batch_size, "samples": state.samples_seen,
            "samples_per_s": state.samples_seen / state.train_seconds, "step_ms": 1000 * state.train_seconds / steps,
            "flops_per_step": flops, "flops_by_dtype": by_dtype, "achieved_flops_per_s": achieved,
            "peak_fp32": peaks["fp32"], "peak_bf16": peaks["bf16"],
            "peak_memory_mb": memory.mb, "memory_kind": memory.kind,
            "val_auc": metrics.get("val/auc", float("nan")), "val_gauc": metrics.get("val/gauc", float("nan")),
            "params_trainable": n_train, "params_total": n_total, "threads": torch.get_num_threads(),
            "device": str(device)}


def step_setup(cfg: Any, *, steps: int,
               device: torch.device | None = None) -> tuple[Any, torch.nn.Module, torch.optim.Optimizer, list]:
    """What a per-step probe needs (this module's `measure`, scripts/compile_probe.py, scripts/e2e_cost_probe.py):
    the run configured (threads, determinism), the data, the model on `device` (default CPU) in train mode with
    an Adam over it, and the first `steps` (0: all) training batches of epoch 1 as row-index arrays."""
    from em3.data.prepare import prepare
    from em3.models.em3 import build_model
    from em3.training.batches import epoch_permutation, global_batches
    from em3.training.runtime import configure_run

    configure_run(cfg)
    data = prepare(cfg)
    samples = data.samples
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, samples=samples, tokens=data.tokens).to(device or torch.device("cpu")).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr_ranker)
    rows = samples.splits["train"]
    perm = rows[epoch_permutation(len(rows), seed=cfg.train.seed, epoch=1)]
    return samples, model, opt, global_batches(perm, batch_size=cfg.train.batch_size, max_steps=steps)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print("SPEED " + json.dumps(measure(json.loads(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
