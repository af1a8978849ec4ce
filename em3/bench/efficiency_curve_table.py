"""The cost curve rendered: a markdown table of ratios to id_only, where each strategy stops fitting, a log-log figure.

Its own block in docs/RESULTS.md (`efficiency-curve-<data>-<cpu|cuda>`), so the efficiency tables stay as
they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from em3.bench.efficiency_curve import CURVE_VARIANTS
from em3.bench.efficiency_misfit import measured, stop_statement
from em3.bench.report import IMG_DIR, machine_line, write_block
from em3.config import Config, from_dict

SECTION = "## Cost curve: history length to 1,000 (issue 15)"
PANELS = (("step_ms_x", "step time / id_only's"), ("peak_memory_mb", "peak memory (MB)"),
          ("flops_x", "GFLOP per step / id_only's"))


def _f(v: Any, fmt: str) -> str:
    return "–" if v is None or v != v else format(v, fmt)


def _variants(result: dict[str, Any]) -> list[str]:
    seen = list(dict.fromkeys(r["variant"] for r in result["rows"]))
    return sorted(seen, key=lambda v: CURVE_VARIANTS.index(v) if v in CURVE_VARIANTS else 99)


def _data_line(result: dict[str, Any], base: Config) -> str:
    curve = result["curve"]
    if result["data"] == "movielens":
        what = ("MovieLens-100K (the `movielens` preset: cached pretrained-encoder tokens; positive = rating ≥ "
                f"{base.data.positive_threshold:g})")
    else:
        from em3.data.synthetic import SIZES

        s = SIZES[base.data.preset]
        what = (f"the `{base.data.preset}` synthetic preset ({s.items:,} items, {s.users:,} users, about "
                f"{s.impressions_per_user:,} impressions each; scratch encoders)")
    line = f"Data: {what}. Its longest history is {curve['longest_history']:,} positives (one user's)"
    if max(curve["requested"]) > curve["longest_history"] and max(curve["lengths"]) <= curve["longest_history"]:
        return line + (f", so the curve stops at L = {curve['longest_history']:,} instead of "
                       f"{max(curve['requested']):,}: a longer L would only add padding.")
    past = [v for v in curve["lengths"] if v > curve["longest_history"]]
    return line + (f"; L = {', '.join(map(str, past))} only adds padding." if past else ".")


def render(result: dict[str, Any], *, machine: str, figure: Path | None) -> str:
    base = from_dict(result["base"])
    rows = sorted(result["rows"], key=lambda r: (r["length"], _variants(result).index(r["variant"])))
    cap = result.get("memory_limit_gb", 0.0)
    batch = next((r["batch_size"] for r in rows if "batch_size" in r), base.train.batch_size)
    ram = result.get("machine_memory_gb") or 0.0
    cap_text = (f"each CPU probe ran under an address-space cap (RLIMIT_AS) of **{cap:g} GiB**"
                + (f" ({cap / ram:.0%} of this machine's {ram:g} GiB)" if ram else "") + ", so a config that "
                "needs more fails its allocation and is reported as *does not fit* (the cap counts address space, "
                "which runs ahead of RSS: a probe's imports alone reserve about 1.5 GB of it)"
                if cap else "no memory cap (CUDA: the GPU's own out-of-memory error marks a config that does not fit)")
    lines = [
        f"Command: `{result['command']}`  ",
        f"Machine: {machine}.  ",
        _data_line(result, base) + "  ",
        f"Device `{result['device']}`; {result['warmup']} warm-up + {result['steps']} timed training steps per "
        f"config (median), batch {batch}; each config in a fresh process; {cap_text}; finished "
        f"{result['finished']}; MLflow group `{result['group']}` (`em3.kind=efficiency`).  ",
        "×id = ratio to `id_only` at the same L, same run. Peak MB: the probe process's peak (RSS on CPU, "
        "with the data: the samples hold an (N, L) int64 history); step MB: its growth during the timed steps. "
        "History fill: real history entries / L over the timed batches (the rest is padding).",
        "",
        "| L | strategy | step ms | ×id | peak MB | ×id | step MB | ×id | trainable params | ×id | GFLOP/step "
        "| ×id | history fill | unique items/batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("out_of_memory"):
            fit = measured(result["rows"], r["variant"], below=r["length"])
            last = (f"last fit: L = {fit[-1]['length']} at {fit[-1]['peak_memory_mb']:,.0f} MB" if fit
                    else "no smaller L fit")
            note = f"{cap:g} GiB cap; {last}" if cap else last
            lines.append(f"| {r['length']} | {r['variant']} | **does not fit** ({note}) |" + " |" * 11)
            continue
        if "error" in r:
            lines.append(f"| {r['length']} | {r['variant']} | failed: {r['error'][:80]} |" + " |" * 11)
            continue
        lines.append(
            f"| {r['length']} | {r['variant']} | {r['step_ms']:.1f} | {_f(r['step_ms_x'], '.2f')} | "
            f"{r['peak_memory_mb']:,.0f} | {_f(r['peak_memory_mb_x'], '.2f')} | {r['step_memory_mb']:,.0f} | "
            f"{_f(r['step_memory_mb_x'], '.2f')} | {r['params_trainable']:,} | {_f(r['params_trainable_x'], '.2f')} | "
            f"{r['flops'] / 1e9:.2f} | {_f(r.get('flops_x'), '.2f')} | {_f(r.get('history_fill'), '.0%')} | "
            f"{r['unique_items_per_batch']:,} |")
    lines += ["", "Where each strategy stops fitting in this machine's memory:", ""]
    for v in _variants(result):
        failed = [r for r in rows if r["variant"] == v and r.get("out_of_memory") and r.get("phase") != "not tried"]
        lines.append(f"- `{v}` {stop_statement(v, result['rows'], base, cap_gb=cap)}"
                     + "".join(f" The error: `{r['error'][:160]}`." for r in failed[:1]))
    if figure is not None:
        lines += ["", f"![{figure.stem}](img/{figure.name})"]
    return "\n".join(lines)


def figure(result: dict[str, Any], *, path: Path) -> Path:
    """Three log-log panels against L, one line per strategy: step time / id_only, peak memory (with the
    cap; a cross where a strategy does not fit), GFLOP per step / id_only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cap_mb = result.get("memory_limit_gb", 0.0) * 1024
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.2))
    for i, variant in enumerate(_variants(result)):
        colour = f"C{i}"
        ok = measured(result["rows"], variant)
        for ax, (key, _) in zip(axes, PANELS):
            pts = [(r["length"], r.get(key, float("nan"))) for r in ok]
            pts = [(x, y) for x, y in pts if y == y and y > 0]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=colour, label=variant,
                        linestyle=":" if variant == "id_only" and key.endswith("_x") else "-")
        misfit = [r["length"] for r in result["rows"] if r["variant"] == variant and r.get("out_of_memory")]
        if misfit and cap_mb:
            axes[1].plot(misfit, [cap_mb] * len(misfit), marker="x", markersize=10, linestyle="", color=colour)
    if cap_mb:
        axes[1].axhline(cap_mb, color="grey", linestyle="--", linewidth=1, label=f"cap {cap_mb / 1024:g} GiB")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    lengths = sorted({r["length"] for r in result["rows"]})
    for ax, (_, label) in zip(axes, PANELS):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(lengths, [str(v) for v in lengths])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_major_formatter(plain)
        lo, hi = ax.get_ylim()       # minor labels only where the axis spans less than a decade
        ax.yaxis.set_minor_formatter(plain if hi < 10 * lo else matplotlib.ticker.NullFormatter())
        ax.set_xlabel("history length L")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Cost vs history length, {result['data']} ({result['device']}); x: does not fit")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(result: dict[str, Any], *, machine: str | None = None, directory: Path = IMG_DIR) -> Path:
    """Render the curve into its block of docs/RESULTS.md, with its figure; returns the figure's path."""
    kind = "cuda" if result["device"].startswith("cuda") else "cpu"
    fig = figure(result, path=directory / f"bench_curve_{result['data']}_{kind}.png")
    body = (f"### {result['data']}, {kind.upper()}\n\n"
            + render(result, machine=machine or machine_line(), figure=fig))
    write_block(body, section=SECTION, name=f"efficiency-curve-{result['data']}-{kind}")
    return fig
