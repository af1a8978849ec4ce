"""One efficiency measurement in a fresh process: time, memory, FLOPs and parameters of a training step.

Run as `python -m em3.bench.probe '<json spec>'`; prints one JSON line. A fresh process per
config makes the CPU peak-memory reading honest: ru_maxrss only ever grows, so the step's peak
is `maxrss after the steps - RSS before the first step`, in a process that measured nothing else.
On CUDA the allocator's peak (max_memory_allocated) is read instead. A config that runs out of
memory (under the bench's address-space cap, em3.bench.memory_limit) prints an error line instead,
naming the phase it failed in and the allocation's size.
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

from em3.config import from_dict
from em3.bench.flops import count_flops_by_dtype
from em3.bench.memory_limit import allocation_bytes, is_out_of_memory


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def _tokens_per_item(tokens: Any) -> int:
    """Cached tokens per item over every fused modality (0 without content)."""
    if tokens is None:
        return 0
    return int(sum(m.tokens.shape[1] for m in tokens.modalities.values()))


def measure(spec: dict[str, Any], *, progress: dict[str, str] | None = None) -> dict[str, Any]:
    """spec: config (to_dict), warmup, steps, live_backbones (bool). Returns the measurements.

    `progress["phase"]` names the phase running (data, model, warm-up, timed steps, FLOP count), so a
    caller that catches an error can say where it struck.
    """
    progress = {} if progress is None else progress
    progress["phase"] = "data"
    from em3.data.prepare import prepare
    from em3.models.em3 import build_model
    from em3.training.batches import epoch_permutation, to_batch
    from em3.training.distributed import resolve_device
    from em3.training.fit import compute_loss, make_optimizer

    from em3.training.runtime import configure_run

    cfg = from_dict(spec["config"])
    configure_run(cfg)
    device = resolve_device(cfg.train.device)
    data = prepare(cfg)
    raw, samples = data.raw, data.samples
    torch.manual_seed(cfg.train.seed)
    progress["phase"] = "model"
    model = build_model(cfg, samples=samples, tokens=data.tokens)
    if spec.get("live_backbones"):
        from em3.bench.live_tokens import LiveTokenStore

        if model.content is None or getattr(model.content, "store", None) is None:
            raise ValueError(f"live_backbones needs a Fusion-Q-Former arm, not {cfg.model.arm!r}")
        model.content.store = LiveTokenStore(raw, samples, cfg.encoder)
    model = model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    n_train, n_total = model.count_parameters()
    train_rows = samples.splits["train"]
    perm = train_rows[epoch_permutation(len(train_rows), seed=cfg.train.seed, epoch=1)]
    bs = cfg.train.batch_size
    n_steps = spec["warmup"] + spec["steps"]
    batches = [perm[(i * bs) % max(len(perm) - bs, 1):][:bs] for i in range(n_steps + 1)]
    autocast = device.type == "cuda" and cfg.train.bf16

    def step(rows: np.ndarray, *, update: bool = True) -> None:
        batch = to_batch(samples, rows, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model(batch)
        loss, _, _ = compute_loss(out, batch["label"], cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if update:
            optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # step 1: warm-up (allocator, autotuning, lazy init), then the memory baseline
    progress["phase"] = "warm-up steps"
    for rows in batches[:spec["warmup"]]:
        step(rows)
    sync()
    rss_before = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        alloc_before = torch.cuda.memory_allocated(device) / 2**20
    # step 2: timed steps (median)
    times = []
    progress["phase"] = "timed steps"
    for rows in batches[spec["warmup"]:n_steps]:
        sync()
        t0 = time.perf_counter()
        step(rows)
        sync()
        times.append(time.perf_counter() - t0)
    out: dict[str, Any] = {}
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        out.update(peak_memory_mb=peak, step_memory_mb=peak - alloc_before, memory_kind="cuda_max_allocated")
    else:
        peak = _maxrss_mb()
        out.update(peak_memory_mb=peak, step_memory_mb=max(peak - rss_before, 0.0), memory_kind="cpu_maxrss")
    # step 3: FLOPs of one forward+backward on a fresh batch (no optimiser update: weights unchanged)
    progress["phase"] = "FLOP count"
    flops_by_dtype = count_flops_by_dtype(lambda: step(batches[n_steps], update=False))
    flops = sum(flops_by_dtype.values())
    hist = torch.as_tensor(samples.history[batches[0]])
    unique = int(torch.unique(torch.cat([torch.as_tensor(samples.item[batches[0]]), hist.flatten()])).numel())
    median = statistics.median(times)
    fill = samples.history_len[np.concatenate(batches[:n_steps])]
    out.update(step_ms=median * 1000, step_ms_all=[t * 1000 for t in times], samples_per_s=bs / median,
               flops=flops, flops_by_dtype=flops_by_dtype, achieved_flops_per_s=flops / median,
               params_trainable=n_train, params_total=n_total,
               history_params_trainable=model.history_trainable_parameters(), batch_size=bs,
               unique_items_per_batch=unique, device=str(device), threads=torch.get_num_threads(),
               num_samples=len(samples.label), history_fill=float(fill.mean()) / cfg.data.max_history,
               tokens_per_item=_tokens_per_item(data.tokens))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    progress: dict[str, str] = {}
    try:
        out = measure(spec, progress=progress)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        msg = " ".join(str(exc).split())[-300:] or type(exc).__name__
        print("PROBE " + json.dumps({"error": f"out of memory in {progress.get('phase', '?')}: {msg}",
                                     "out_of_memory": True, "phase": progress.get("phase", "?"),
                                     "alloc_bytes": allocation_bytes(msg)}), flush=True)
        return 3
    print("PROBE " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
