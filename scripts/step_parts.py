"""Where an em3 MovieLens step's time goes beyond id_only's: one process, one batch, medians of perf_counter.

    python scripts/step_parts.py [KEY=VALUE ...]     # overrides on top of the `movielens` preset, both arms

Prints the whole training step of each arm (forward, backward, Adam), each forward without gradient, the
content encoder's forward + backward alone, DIN's forward + backward with and without the content unit (the
content inputs detached), DIN's content unit alone, and the 16 sampled CIC negatives' encode. Not a bench row,
and not a test: a probe for attributing a step (docs/RESULTS.md, Speed, session 16). Run it with nothing else
heavy on the machine.

It ends with issue 12's two open targets read as bounds on these parts (docs/RESULTS.md, Speed, session 23):
- em3 <= 3x id_only leaves 2x id_only's step for everything content adds. The token projection (the only
  bf16 matmuls of the encoder) cannot take less than its FLOPs at the in-process bf16 peak, nor DIN's
  content unit less than it takes now without a faster unit, which would speed id_only's ID unit as much;
  the bound says what would be left for the rest.
- >= 50% of the per-dtype peaks means a step no longer than twice its FLOPs' time at those peaks (its
  roofline time); DIN (its two units, nearly FLOP-free elementwise work, and its head) is set beside it.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

import torch

from em3.bench.flops import count_flops_by_dtype, dtype_peaks, roofline_seconds
from em3.bench.speed_probe import step_setup
from em3.config import parse_set, preset, with_arm, with_overrides
from em3.training.batches import to_batch
from em3.training.fit import compute_loss


def median_ms(f: Callable[[], None], reps: int = 12) -> float:
    f()
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return round(sorted(times)[len(times) // 2] * 1000, 1)


def main() -> None:
    sets = dict(parse_set(sys.argv[1:]))
    arms = {}
    for arm in ("id_only", "em3"):
        cfg = with_overrides(with_arm(preset("movielens"), arm), {"speed.threads": 2, **sets})
        samples, model, opt, batches = step_setup(cfg, steps=2)
        arms[arm] = (cfg, model, opt, to_batch(samples, batches[0], torch.device("cpu")))
    b = arms["em3"][3]

    def step(arm: str) -> Callable[[], None]:
        cfg, model, opt, batch = arms[arm]

        def f() -> None:
            torch.manual_seed(0)
            loss, _, _ = compute_loss(model(batch), batch["label"], cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return f

    def forward(arm: str) -> Callable[[], None]:
        _, model, _, batch = arms[arm]

        def f() -> None:
            torch.manual_seed(0)
            with torch.no_grad():
                model(batch)
        return f

    em3 = arms["em3"][1]
    item, history = b["item"], b["history"]

    def encode() -> None:
        target, (table, _) = em3.content.encode(item, history)
        ((target * target).sum() + (table * table).sum()).backward()

    with torch.no_grad():
        target0, (table0, index0) = em3.content.encode(item, history)

    def ranker(content: bool) -> Callable[[], None]:
        model = arms["em3" if content else "id_only"][1]
        user = model.user_vector(b["user"]).detach()
        target_row, history_row = model._id_rows(b)

        def f() -> None:
            kw = dict(history_id_rows=(model.item_id_emb.weight, history_row))
            if content:
                t, table = target0.clone().requires_grad_(), table0.clone().requires_grad_()
                kw.update(target_content=t, history_content=table[index0], history_content_rows=(table, index0))
            out = model.ranker(user, model.item_id_emb(target_row), history_id=model.item_id_emb(history_row),
                               history_mask=history != 0, **kw)
            out.logits.sum().backward()
        return f

    def content_unit() -> None:
        t, table = target0.clone().requires_grad_(), table0.clone().requires_grad_()
        interest, w = em3.ranker.content_attention(t, None, history != 0, rows=(table, index0))
        (interest.sum() + w.sum()).backward()

    negatives = em3.warm_items[:16]

    def negatives_encode() -> None:
        e = em3.content.embed(negatives)
        (e * e).sum().backward()

    ms = {}
    for name, f in [("id_only step", step("id_only")), ("em3 step", step("em3")),
                    ("id_only forward, no grad", forward("id_only")), ("em3 forward, no grad", forward("em3")),
                    ("content encoder forward + backward", encode), ("DIN forward + backward, IDs", ranker(False)),
                    ("DIN forward + backward, IDs + content", ranker(True)),
                    ("DIN's content unit forward + backward", content_unit),
                    ("16 CIC negatives forward + backward", negatives_encode)]:
        ms[name] = median_ms(f)
        print(f"{name}: {ms[name]} ms", flush=True)
    print(f"unique targets {torch.unique(item).numel()}, unique history items {table0.shape[0]}")
    bounds(ms, encode_flops=count_flops_by_dtype(encode), step_flops=count_flops_by_dtype(step("em3")),
           peaks=dtype_peaks(torch.device("cpu"), "bf16"))


def bounds(ms: dict[str, float], *, encode_flops: dict[str, int], step_flops: dict[str, int],
           peaks: dict[str, float]) -> None:
    """Issue 12's two open targets as bounds on the measured parts (the module docstring says how)."""
    ident, em3 = ms["id_only step"], ms["em3 step"]
    adds, budget = em3 - ident, 2 * ident
    proj_flops, step_total = encode_flops.get("bf16", 0), sum(step_flops.values())
    projection = 1000 * proj_flops / peaks["bf16"]                                   # ms at 100% of the bf16 peak
    unit = ms["DIN's content unit forward + backward"]
    print(f"\nem3 <= 3x id_only: what content adds may take {budget:.1f} ms (2 x {ident} ms); it takes {adds:.1f} ms "
          f"({em3 / ident:.2f}x)")
    print(f"  the token projection, {proj_flops / 1e9:.2f} GFLOP in bf16, at 100% of the "
          f"{peaks['bf16'] / 1e9:.0f} GFLOP/s bf16 peak: {projection:.1f} ms")
    print(f"  DIN's content unit: {unit} ms")
    print(f"  left for the rest of what content adds (the encoder beyond its projection, CIC, Adam): "
          f"{budget - projection - unit:.1f} ms; it takes {adds - projection - unit:.1f} ms with the projection at peak")
    roof = 1000 * roofline_seconds(step_flops, peaks)
    share = step_flops.get("bf16", 0) / max(1, step_total)
    din = ms["DIN forward + backward, IDs + content"]
    print(f"\n>= 50% of the per-dtype peaks: the em3 step's {step_total / 1e9:.2f} GFLOP "
          f"({share:.0%} bf16) take {roof:.1f} ms at the peaks (fp32 {peaks['fp32'] / 1e9:.0f}, bf16 "
          f"{peaks['bf16'] / 1e9:.0f} GFLOP/s), so 50% means a step <= {2 * roof:.1f} ms; it takes {em3} ms "
          f"({roof / em3:.0%})")
    print(f"  DIN forward + backward, both units and the head (mostly elementwise work on (pairs, 64) tensors, "
          f"few FLOPs): {din} ms")


if __name__ == "__main__":
    main()
