"""The quality table: cells (arm x ranker, seeds) rendered as markdown with deltas, noise calls and a figure."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from em3.bench.quality import Cell, QualitySpec
from em3.bench.report import IMG_DIR, bar_chart, fmt_pm, mean_std
from em3.bench.search import describe_grid
from em3.bench.tpe import describe_space

SPLIT_METRICS = ("test/auc", "test/gauc", "test/logloss", "test_cold/auc", "test_cold/gauc", "test_cold/logloss")
SECTION = "## Quality (MovieLens-100K, CTR)"
FIGURE = "bench_quality_auc.png"


def settled(cells: Sequence[Cell], n_points: int) -> list[Cell]:
    """The cells as the table shows them: a cell whose search is unfinished has no chosen point and no runs yet
    (its best-so-far point may still lose to a point not yet trained)."""
    return [c if c.searched >= n_points else replace(c, chosen=None, runs={}) for c in cells]


def cell_stats(cell: Cell, key: str) -> tuple[float, float]:
    return mean_std([r.metrics.get(key, float("nan")) for r in cell.runs.values()])


def delta(a: Cell | None, b: Cell | None, key: str) -> tuple[float, bool | None]:
    """(mean(a) - mean(b), within noise?) where noise = |Δ| < 2 × the larger std; None when unknowable."""
    if a is None or b is None or not a.runs or not b.runs:
        return float("nan"), None
    (ma, sa), (mb, sb) = cell_stats(a, key), cell_stats(b, key)
    d = ma - mb
    stds = [s for s in (sa, sb) if s == s]
    if len(stds) < 2:
        return d, None
    return d, abs(d) < 2 * max(stds)


def fmt_delta(d: float, noise: bool | None) -> str:
    if d != d:
        return "–"
    tag = "" if noise is None else (" (noise)" if noise else " **")
    return f"{d:+.4f}{tag}"


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _image_size(spec: QualitySpec) -> str:
    enc = spec.base.encoder
    return f"{enc.image_height}×{enc.image_width} input" if enc.image_height else "native size"


def render(spec: QualitySpec, cells: Sequence[Cell], *, command: str, machine: str,
           figure: Path | None = None) -> str:
    """The generated block of the quality section: notes, the table, the deltas, the figure, what is missing."""
    n_seeds, n_points = len(spec.seeds), spec.n_points
    cells = settled(cells, n_points)
    by = {(c.arm, c.ranker): c for c in cells}
    done = sum(len(c.runs) for c in cells)
    lines = [
        f"Command: `{command}`  ",
        f"Table written on: {machine} (each run's training device is listed under the table).  ",
        f"MLflow group `{spec.group}` (tags `em3.kind=ctr`, `em3.config_hash`); re-running the command resumes it.  ",
        f"Progress: **{done} of {len(cells) * n_seeds}** table runs finished "
        f"({len(cells)} arm×ranker cells × {n_seeds} seeds).",
        "",
        f"Base: `{spec.base.data.source}`, L = {spec.base.data.max_history}, batch {spec.base.train.batch_size}, "
        f"≤ {spec.base.train.epochs} epochs with early stopping on val AUC (patience {spec.base.train.patience}), "
        f"{spec.base.speed.compute_dtype} token store and projection"
        f"{' (bf16 where the CPU has bf16 matmuls, else fp32)' if spec.base.speed.compute_dtype == 'auto' else ''}, "
        f"image `{spec.base.encoder.image_encoder}` ({_image_size(spec)}), text `{spec.base.encoder.text_encoder}` "
        f"({spec.base.encoder.text_layers} layers), Fusion-Q-Former D = {spec.base.model.fusion.dim}, "
        f"N_q = {spec.base.model.fusion.num_queries}, user features {_on(spec.base.model.ranker.user_features)}, "
        f"ID dropout p = {spec.base.train.id_dropout:g}, CIC λ = {spec.base.model.cic.weight:g} "
        f"(τ = {spec.base.model.cic.temperature:g}), fast dropout masks {_on(spec.base.speed.fast_dropout)}.  ",
        f"Search (validation only, seed {spec.seeds[0]}, the same {n_points} point(s) for every arm × ranker): "
        f"{describe_space(spec.space, spec.trials) if spec.space else describe_grid(spec.grid)}; the point with "
        f"the best {spec.criterion.replace('/', ' ').replace('auc', 'AUC')} is used for "
        "every seed; no test metric is read.",
        "",
        "| arm | ranker | seeds | chosen | test AUC | test gAUC | test logloss | cold AUC | cold gAUC | cold logloss "
        "| ΔAUC vs id_only | ΔAUC vs precomputed | ΔAUC vs em3 | Δcold AUC vs id_only | Δcold AUC vs precomputed "
        "| Δcold AUC vs em3 | epochs to best | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        stats = [fmt_pm(*cell_stats(c, k)) for k in SPLIT_METRICS]
        refs = [by.get((a, c.ranker)) for a in ("id_only", "precomputed", "em3")]
        deltas = [fmt_delta(*delta(c, ref, key)) if ref is not c else ("0" if c.runs else "–")
                  for key in ("test/auc", "test_cold/auc") for ref in refs]
        # order: test vs id_only, vs precomputed, vs em3, then the same for cold
        chosen = "–" if c.chosen is None else (", ".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(c.chosen.items()))
                                                or "defaults")
        search = "" if c.searched >= n_points else f" (search {c.searched}/{n_points}: not shown until complete)"
        epochs = fmt_pm(*cell_stats(c, "best_epoch"), digits=1)
        secs = fmt_pm(*cell_stats(c, "time/train_seconds"), digits=0)
        lines.append(f"| {c.arm} | {c.ranker} | {len(c.runs)}/{n_seeds}{search} | {chosen} | " + " | ".join(stats)
                     + " | " + " | ".join(deltas) + f" | {epochs} | {secs} |")
    lines += [
        "",
        "Δ = difference of means; **(noise)** = |Δ| < 2 × the larger std of the two cells (not a difference); "
        "** = beyond 2 std; no tag = fewer than 2 seeds on a side, so noise cannot be judged yet. "
        "logloss mostly measures calibration (the positive rate drifts between splits); compare it within a column.",
    ]
    lines += search_lines(cells, n_points, spec.criterion)
    lines += alignment_lines(cells)
    where: dict[str, int] = {}
    for c in cells:
        for r in c.runs.values():
            dev = r.tags.get("em3.gpu") or r.tags.get("em3.device", "?")
            if r.tags.get("em3.compute_dtype"):
                dev += f" ({r.tags['em3.compute_dtype']} token store)"
            source = r.tags.get("em3.imported_from", "")
            origin = (" (trained offline, imported)" if source.startswith("offline:") else
                      " (an earlier checkout's run, restored from the ledger)" if source.startswith("ledger:") else "")
            where[dev + origin] = where.get(dev + origin, 0) + 1
    if where:
        lines += ["", "Where the finished runs trained: " + "; ".join(f"{n} on {d}" for d, n in sorted(where.items()))
                  + ". Train seconds are only comparable between runs on the same device."]
    missing = [f"{c.arm}/{c.ranker} ({len(c.runs)}/{n_seeds})" for c in cells if len(c.runs) < n_seeds]
    if missing:
        lines += ["", f"Still missing: {', '.join(missing)}."]
    if figure is not None:
        lines += ["", f"![test and test-cold AUC per arm](img/{figure.name})"]
    return "\n".join(lines)


def figure(cells: Sequence[Cell], *, path: Path = IMG_DIR / FIGURE) -> Path | None:
    """Bar chart of test and test-cold AUC (mean ± std over seeds) per arm, one bar per ranker × split."""
    arms = list(dict.fromkeys(c.arm for c in cells))
    rankers = list(dict.fromkeys(c.ranker for c in cells))
    by = {(c.arm, c.ranker): c for c in cells}
    series: dict[str, tuple[list[float], list[float]]] = {}
    lo = 1.0
    for ranker in rankers:
        for key, label in (("test/auc", "test"), ("test_cold/auc", "cold")):
            stats = [cell_stats(by[(a, ranker)], key) for a in arms]
            if all(m != m for m, _ in stats):
                continue
            series[f"{ranker} {label}"] = ([0.0 if m != m else m for m, _ in stats], [s for _, s in stats])
            lo = min([lo] + [m for m, _ in stats if m == m])
    if not series:
        return None
    return bar_chart(arms, series, path=path, ylabel="AUC (mean ± std over seeds)",
                     title="MovieLens-100K: test and test-cold AUC per arm", ylim=(max(0.0, lo - 0.05), None))


def search_lines(cells: Sequence[Cell], n_points: int, criterion: str) -> list[str]:
    """The searches still running: each finished trial's validation criterion, so a partial table shows where
    every unfinished cell stands (validation only: its test metrics wait for the cell's chosen point)."""
    rows = [f"| {c.arm} | {c.ranker} | {c.searched}/{n_points} | " + ", ".join(f"{v:.4f}" for v in c.trials)
            + f" | {max((v for v in c.trials if v == v), default=float('nan')):.4f} |"
            for c in cells if 0 < c.searched < n_points]
    if not rows:
        return []
    return ["", f"Searches in progress: {criterion} of each finished trial (seed 0), in the order trained; a cell's "
            "test metrics appear once its search is complete.", "",
            f"| arm | ranker | trials | {criterion} per trial | best so far |", "|---|---|---|---|---|", *rows]


ALIGN_METRICS = ("align/matched_cosine", "align/random_cosine", "align/top1_content_to_id", "align/catalogue_alignment",
                 "align/catalogue_uniformity_content", "align/catalogue_uniformity_id", "align/mean_cosine_content",
                 "align/mean_cosine_id")


def alignment_lines(cells: Sequence[Cell]) -> list[str]:
    """Did CIC align anything? The end-of-run shared-space metrics of every cell that has them (mean ± std)."""
    rows = []
    for c in cells:
        have = [r for r in c.runs.values() if "align/catalogue_alignment" in r.metrics]
        if not have:
            continue
        stat = lambda k: fmt_pm(*mean_std([r.metrics[k] for r in have]), digits=3)   # noqa: E731
        chance = mean_std([r.metrics["align/top1_chance"] for r in have])[0]
        rows.append(f"| {c.arm} | {c.ranker} | {len(have)} | " + " | ".join(stat(k) for k in ALIGN_METRICS[:2])
                    + f" | {stat(ALIGN_METRICS[2])} (chance {chance:.4f}) | "
                    + " | ".join(stat(k) for k in ALIGN_METRICS[3:]) + " |")
    if not rows:
        return []
    return ["", "Did CIC align anything? Over every warm item, in the shared space of CIC's two projection heads, "
            "from each run's explain/embeddings.npz (its best model): cosine of an item's content with its own ID "
            "vs with another item's ID; top-1 = share of items whose own ID is the nearest to their content; "
            "alignment = mean ‖c − e‖² of matched unit pairs (0 = coincide, 2 = orthogonal); uniformity = "
            "log mean exp(−2‖x − y‖²) per side (0 = one point, about −3.9 = spread over a high-dimensional sphere); "
            "mean pairwise cosine per side (near 1 = a narrow cone).", "",
            "| arm | ranker | runs | matched cos | random cos | top-1 content→ID | alignment | uniformity (content) "
            "| uniformity (ID) | mean cos (content) | mean cos (ID) |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *rows]
