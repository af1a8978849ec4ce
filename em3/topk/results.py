"""The top-K results table: mean ± std over seeds, EM3's relative gain over FREEDOM, the authors'
Amazon numbers beside it, written as one section of docs/RESULTS.md (other sections untouched)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

SECTION = "## Top-K (FREEDOM backbone)"
COLUMNS = ("recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50", "precision@20")
LABELS = {"vbpr": "VBPR", "lightgcn": "LightGCN", "freedom": "FREEDOM", "em3_freedom": "EM3 (on FREEDOM)"}

AUTHORS_TABLE = """| dataset | model | R@10 | R@20 | N@10 | N@20 |
| --- | --- | --- | --- | --- | --- |
| Baby | VBPR | 0.0423 | 0.0663 | 0.0223 | 0.0285 |
| Baby | LATTICE | 0.0551 | 0.0852 | 0.0292 | 0.0369 |
| Baby | FREEDOM | 0.0624 | 0.0985 | 0.0324 | 0.0416 |
| Baby | EM3 | 0.0646 | 0.1032 | 0.0336 | 0.0435 |
| Sports | FREEDOM | 0.0713 | 0.1075 | 0.0384 | 0.0477 |
| Sports | EM3 | 0.0726 | 0.1099 | 0.0391 | 0.0488 |"""


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summary_rows(per_model: dict[str, list[dict[str, float]]], *, split: str = "test") -> list[str]:
    """Markdown rows `| model | m ± s | ... |` from each model's per-seed final metrics."""
    rows = []
    for model, runs in per_model.items():
        cells = []
        for col in COLUMNS:
            m, s = mean_std([r[f"{split}/{col}"] for r in runs])
            cells.append(f"{m:.4f} ± {s:.4f}")
        ep = mean_std([r["best_epoch"] for r in runs])[0]
        sec = mean_std([r.get("time/train_seconds", float("nan")) for r in runs])[0]
        rows.append(f"| {LABELS.get(model, model)} | {' | '.join(cells)} | {ep:.0f} | {sec:.0f} |")
    return rows


def relative_gain(per_model: dict[str, list[dict[str, float]]], metric: str, *, base: str = "freedom",
                  new: str = "em3_freedom") -> str:
    """One sentence: new vs base on test/<metric>, relative gain and whether it exceeds 2 std."""
    if base not in per_model or new not in per_model:
        return ""
    b = mean_std([r[f"test/{metric}"] for r in per_model[base]])
    n = mean_std([r[f"test/{metric}"] for r in per_model[new]])
    gain = 100.0 * (n[0] - b[0]) / b[0] if b[0] else float("nan")
    spread = 2 * max(b[1], n[1])
    if min(len(per_model[base]), len(per_model[new])) < 2:
        verdict = "one seed: no spread to judge it by"
    else:
        verdict = "larger than 2 std" if abs(n[0] - b[0]) > spread else "within 2 std: not a difference"
    return (f"{metric}: {LABELS[new]} {n[0]:.4f} ± {n[1]:.4f} vs {LABELS[base]} {b[0]:.4f} ± {b[1]:.4f} "
            f"→ {gain:+.1f}% relative ({verdict})")


def results_table(per_model: dict[str, list[dict[str, float]]]) -> str:
    head = "| model | " + " | ".join(c.replace("recall", "R").replace("ndcg", "N").replace("precision", "P")
                                      for c in COLUMNS) + " | best epoch | s/run |"
    sep = "| --- " * (len(COLUMNS) + 3) + "|"
    return "\n".join([head, sep, *summary_rows(per_model)])


def replace_section(path: Path, body: str, *, heading: str = SECTION) -> None:
    """Write `heading` + body into path, replacing only that section (up to the next `## `); create if missing."""
    text = path.read_text() if path.exists() else "# Results\n"
    block = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\s*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
