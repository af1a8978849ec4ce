"""What training the top of each backbone with the ranking loss would add to an em3 MovieLens step (issue 13's
"true end-to-end" arm), measured against the step itself in one process.

    python scripts/e2e_cost_probe.py --steps 10 --threads 2

For each of the first `--steps` batches of the `movielens` preset it times the em3 training step (eager, the
preset's levers), then the two layers an end-to-end arm would run per step on that batch's unique items:
MiniLM's last BertLayer over (U, 64 tokens, 384) and MobileNetV2's last 1x1 conv block (320 -> 1280, BN, ReLU6)
over (U, 320, 5, 3), forward over every unique item (targets and history) and backward over the target items
(the history path does not train the backbone). Inputs are random tensors of the shapes the cache would hold;
the layers are the pretrained ones ($EM3_TEXT_ENCODER, $EM3_IMAGE_ENCODER). Prints one JSON line of medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from transformers import AutoModel

from em3.bench.speed_probe import step_setup
from em3.config import preset, with_overrides
from em3.training.batches import to_batch
from em3.training.fit import compute_loss


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _layer_cost(layer: torch.nn.Module, make_input, n_all: int, n_target: int) -> float:
    """Seconds for forward over n_all items (no grad for the history-only ones) + forward/backward over n_target."""
    def run() -> None:
        with torch.no_grad():
            layer(make_input(n_all - n_target))
        out = layer(make_input(n_target))
        out = out[0] if isinstance(out, tuple) else out
        out.float().square().mean().backward()
    return _timed(run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    cfg = with_overrides(preset("movielens"), {"speed.threads": a.threads})
    samples, model, opt, batches = step_setup(cfg, steps=a.steps + 2)
    text_layer = AutoModel.from_pretrained(os.environ.get("EM3_TEXT_ENCODER", cfg.encoder.text_encoder)).encoder.layer[-1]
    image_top = AutoModel.from_pretrained(os.environ.get("EM3_IMAGE_ENCODER", cfg.encoder.image_encoder)).conv_1x1
    text_layer.train()
    image_top.train()
    text_in = lambda n: torch.randn(n, 64, 384)          # noqa: E731 - hidden states entering the last layer
    image_in = lambda n: torch.randn(n, 320, 5, 3)       # noqa: E731 - the 320-channel map of a 138x92 poster
    step_s, text_s, image_s, units = [], [], [], []
    for r in batches:
        batch = to_batch(samples, r, torch.device("cpu"))

        def step() -> None:
            loss, _, _ = compute_loss(model(batch), batch["label"], cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
        n_target = int(torch.unique(batch["item"]).numel())
        n_all = int(torch.unique(torch.cat([batch["item"], batch["history"].reshape(-1)])).numel()) - 1  # no padding
        step_s.append(_timed(step))
        text_s.append(_layer_cost(text_layer, text_in, n_all, n_target))
        image_s.append(_layer_cost(image_top, image_in, n_all, n_target))
        units.append((n_all, n_target))
    med = lambda xs: statistics.median(xs[2:])            # noqa: E731 - the first 2 batches warm up
    steps_per_epoch = -(-len(samples.splits["train"]) // cfg.train.batch_size)
    out = {"threads": torch.get_num_threads(), "steps": len(step_s) - 2, "median_unique_items": med([u for u, _ in units]),
           "median_unique_targets": med([t for _, t in units]), "em3_step_s": round(med(step_s), 3),
           "text_top_layer_s": round(med(text_s), 3), "image_top_block_s": round(med(image_s), 3),
           "steps_per_epoch": steps_per_epoch}
    out["text_top_x_step"] = round(out["text_top_layer_s"] / out["em3_step_s"], 2)
    out["image_top_x_step"] = round(out["image_top_block_s"] / out["em3_step_s"], 2)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
