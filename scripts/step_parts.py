"""Where an em3 MovieLens step's time goes beyond id_only's: one process, one batch, medians of perf_counter.

    python scripts/step_parts.py [KEY=VALUE ...]     # overrides on top of the `movielens` preset, both arms

Prints the whole training step of each arm (forward, backward, Adam), each forward without gradient, the
content encoder's forward + backward alone, DIN's forward + backward with and without the content unit (the
content inputs detached), and the 16 sampled CIC negatives' encode. Not a bench row, and not a test: a probe
for attributing a step (docs/RESULTS.md, Speed, session 16). Run it with nothing else heavy on the machine.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

import torch

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

    negatives = em3.warm_items[:16]

    def negatives_encode() -> None:
        e = em3.content.embed(negatives)
        (e * e).sum().backward()

    for name, f in [("id_only step", step("id_only")), ("em3 step", step("em3")),
                    ("id_only forward, no grad", forward("id_only")), ("em3 forward, no grad", forward("em3")),
                    ("content encoder forward + backward", encode), ("DIN forward + backward, IDs", ranker(False)),
                    ("DIN forward + backward, IDs + content", ranker(True)),
                    ("16 CIC negatives forward + backward", negatives_encode)]:
        print(f"{name}: {median_ms(f)} ms", flush=True)
    print(f"unique targets {torch.unique(item).numel()}, unique history items {table0.shape[0]}")


if __name__ == "__main__":
    main()
