"""Writing bench output into docs/RESULTS.md: a generated block inside one section, and matplotlib figures.

Each bench owns a section (`## Quality (MovieLens-100K, CTR)`, `## Efficiency`); inside it, the
text between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` is regenerated, and
everything else in the section (hand-written notes such as "### What we tried") is kept.
"""
from __future__ import annotations

import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Sequence

from em3.paths import REPO_ROOT

RESULTS = REPO_ROOT / "docs" / "RESULTS.md"
IMG_DIR = REPO_ROOT / "docs" / "img"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def write_block(body: str, *, section: str, name: str, path: Path = RESULTS) -> Path:
    """Replace the generated block `name` in `section` of the markdown file (created with '# Results' if missing)."""
    text = path.read_text() if path.exists() else "# Results\n"
    start, end = _markers(name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    elif section in text:
        # Section exists without the block: put the block right under its heading.
        head, tail = text.split(section, 1)
        text = f"{head}{section}\n\n{block}\n{tail}"
    else:
        text = f"{text.rstrip()}\n\n{section}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic replace: other writers of other sections re-read the whole file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".RESULTS-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def machine_line() -> str:
    """The machine a bench ran on, in one line (CPU cores, threads, GPU if any, torch version)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), cpu)
    except OSError:
        model = cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores ({model}), torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads, {gpu}; shared with other jobs, so absolute times are noisy")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std) ignoring NaNs; std is NaN with fewer than two values."""
    vals = [v for v in values if v == v]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def fmt_pm(mean: float, std: float, digits: int = 4) -> str:
    if mean != mean:
        return "–"
    return f"{mean:.{digits}f}" if std != std else f"{mean:.{digits}f} ± {std:.{digits}f}"


def bar_chart(groups: Sequence[str], series: dict[str, tuple[list[float], list[float]]], *, path: Path,
              ylabel: str, title: str, ylim: tuple[float, float] | None = None) -> Path:
    """Grouped bar chart with error bars (series name -> (means, stds) over groups) saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(series), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 2), 3.8))
    for i, (label, (means, stds)) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        errs = [0.0 if s != s else s for s in stds]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, ax, path)


def _save(fig, ax, path: Path) -> Path:
    """Legend, tight layout, PNG at `path` (parents created), figure closed."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loglog_chart(lines: dict[str, tuple[list[float], list[float]]], *, path: Path, xlabel: str, ylabel: str,
                 title: str) -> Path:
    """Log-log line chart (label -> (xs, ys)) saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (xs, ys) in lines.items():
        pts = [(x, y) for x, y in zip(xs, ys) if y == y and y > 0]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, ax, path)
