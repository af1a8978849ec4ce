"""A dataset's vital statistics (sizes, positive rates, splits, history lengths, image coverage) as a dict and as text."""
from __future__ import annotations

from typing import Any

import numpy as np

from em3.data.images import image_coverage
from em3.data.schema import RawDataset, SampleSet

SPLITS = ("train", "val", "val_cold", "test", "test_cold")   # val_cold only where the data has it


def summarize(raw: RawDataset, samples: SampleSet, *, images: bool = True) -> dict[str, Any]:
    """Plain-number statistics of a loaded dataset and its samples (JSON-ready)."""
    lengths = samples.history_len
    out: dict[str, Any] = {
        "dataset": raw.name,
        "fingerprint": raw.fingerprint,
        "users": int(samples.num_users),
        "items": int(samples.num_items),
        "interactions": int(len(samples.label)),
        "positive_rate": float(samples.label.mean()) if len(samples.label) else 0.0,
        "cold_items": int(len(samples.cold_items)),
        "id_rows": int(samples.num_id_rows),
        "attributes": list(raw.attribute_columns),
        "splits": {s: {"samples": int(len(samples.splits[s])),
                       "positive_rate": float(samples.label[samples.splits[s]].mean())
                       if len(samples.splits[s]) else float("nan")} for s in SPLITS if s in samples.splits},
        "history": {
            "max_len": int(samples.history.shape[1]),
            "mean": float(lengths.mean()), "median": float(np.median(lengths)),
            "p90": float(np.percentile(lengths, 90)), "max": int(lengths.max()),
            "empty_share": float((lengths == 0).mean()),
        },
    }
    if images:
        cov = image_coverage(raw)
        out["images"] = {"size": list(raw.image_size), "readable": cov.readable, "missing": cov.missing,
                         "unreadable": cov.unreadable, "coverage": cov.share, "examples": list(cov.examples)}
    return out


def format_summary(stats: dict[str, Any]) -> str:
    """The statistics as an aligned, human-readable block."""
    h = stats["history"]
    lines = [
        f"dataset        {stats['dataset']}  (fingerprint {stats['fingerprint']})",
        f"users          {stats['users']:,}",
        f"items          {stats['items']:,}  ({stats['cold_items']:,} cold, {stats['id_rows']:,} ID rows incl. pad+unknown)",
        f"interactions   {stats['interactions']:,}",
        f"positive rate  {stats['positive_rate']:.3f}",
        "splits         " + "  ".join(f"{s} {v['samples']:,}" for s, v in stats["splits"].items()),
        "positive rate  " + "  ".join(f"{s} {v['positive_rate']:.3f}" for s, v in stats["splits"].items()),
        f"history (L={h['max_len']})  mean {h['mean']:.1f}  median {h['median']:.0f}  p90 {h['p90']:.0f}  "
        f"max {h['max']}  empty {100 * h['empty_share']:.1f}%",
    ]
    if "images" in stats:
        im = stats["images"]
        size = "x".join(map(str, im["size"])) if any(im["size"]) else "varies"
        lines.append(f"images         {im['readable']:,}/{stats['items']:,} readable ({100 * im['coverage']:.1f}%), "
                     f"{im['missing']} missing, {im['unreadable']} unreadable; native size HxW {size}")
        lines += [f"  unreadable: {e}" for e in im["examples"]]
    if stats["attributes"]:
        shown = ", ".join(stats["attributes"][:8]) + (", ..." if len(stats["attributes"]) > 8 else "")
        lines.append(f"attributes     {shown}")
    return "\n".join(lines)
