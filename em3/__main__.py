"""`python -m em3 VERB ...`: the command-line entry; each verb lives in em3/cli/<verb>.py."""
from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module under em3.cli, one-line help). Modules are imported lazily so `--help` is fast.
VERBS: dict[str, tuple[str, str]] = {
    "data": ("em3.cli.data", "Load a dataset, build samples and the feature cache, print a summary."),
    "train": ("em3.cli.train", "Train one arm, log it to MLflow, optionally print a JSON result line."),
    "ablate": ("em3.cli.ablate", "Train a grid of arms x seeds as one group and print mean +- std."),
    "recommend": ("em3.cli.recommend", "Print a user's top-K recommendations from a logged run."),
    "bench": ("em3.cli.bench", "Benchmarks: quality and efficiency tables, top-K (docs/RESULTS.md)."),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m em3", description=__doc__)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module, help_text) in VERBS.items():
        sub.add_parser(verb, help=help_text, add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    verb = argv[0]
    if verb not in VERBS:
        parser.error(f"unknown verb {verb!r}; expected one of {', '.join(VERBS)}")
    try:
        module = importlib.import_module(VERBS[verb][0])
    except ModuleNotFoundError as e:
        if e.name == VERBS[verb][0]:
            parser.error(f"verb {verb!r} is not available in this build")
        raise
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
