"""`python -m em3 bench KIND ...`: the benchmark tables of docs/RESULTS.md, one sub-command per kind.

Each kind is `module:function(argv) -> int` with its own argument parser; modules are imported
lazily so `python -m em3 bench --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib

# kind -> (module, entry function, one-line help). Add a kind by adding a row.
KINDS: dict[str, tuple[str, str, str]] = {
    "topk": ("em3.topk.bench", "main",
             "Top-K on a graph backbone: VBPR, LightGCN, FREEDOM, EM3-on-FREEDOM (Recall/NDCG/Precision@K)."),
    # ---- CTR kinds (owned by the quality/efficiency bench; edit these rows, not the dispatcher) ----
    "quality": ("em3.bench.cli", "quality_main", "CTR quality table: arms x seeds (AUC, gAUC, logloss)."),
    "efficiency": ("em3.bench.cli", "efficiency_main", "Time and memory of the history strategies."),
    "speed": ("em3.bench.cli", "speed_main", "CPU training speed: an epoch per row, each speed lever on and off."),
    "variant": ("em3.bench.variant", "main",
                "A quality-table cell's chosen point with extra overrides (e.g. encoder.image_top=trained)."),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m em3 bench", description=__doc__)
    sub = parser.add_subparsers(dest="kind", metavar="KIND")
    for kind, (_, _, help_text) in KINDS.items():
        sub.add_parser(kind, help=help_text, add_help=False)
    argv = list(argv or [])
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in KINDS:
        parser.error(f"unknown kind {argv[0]!r}; expected one of {', '.join(KINDS)}")
    module, function, _ = KINDS[argv[0]]
    try:
        entry = getattr(importlib.import_module(module), function)
    except (ModuleNotFoundError, AttributeError) as e:
        parser.error(f"bench kind {argv[0]!r} is not available in this build ({e})")
    return int(entry(argv[1:]) or 0)
