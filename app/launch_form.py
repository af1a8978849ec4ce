"""What the Launch and Ablations forms offer: dataset choices, the main knobs, path checks, config assembly.

Defaults and help text come from the config dataclasses (`em3.config`); validation is the
config's own (`with_overrides` raises `ConfigError` naming the field). Dataset paths are only
inspected (exists, readable directory, expected files), never executed or imported.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from em3.config import (ARMS, HISTORY_STRATEGIES, MODALITIES, PRESETS, RANKERS, DEVICES, Config, ConfigError,
                        flatten, field_help, with_arm, with_overrides)

DATASETS = {
    "Synthetic demo": "demo",
    "Synthetic tiny": "tiny",
    "Synthetic with audio (4th modality)": "audio",
    "MovieLens-100K directory": "movielens",
    "Files dataset (path)": "files",
}
DATASET_HELP = {
    "demo": "Generated in seconds: a few thousand items with synthetic images and text; the dashboard default.",
    "tiny": "The test preset: trains in seconds on a CPU.",
    "audio": "600 synthetic items that also have a short sound, whose pitch and rhythm carry attributes seen in "
             "neither the picture nor the words; em3 fuses image, text and audio (about a minute on a CPU).",
    "movielens": "MovieLens-100K with TMDB posters: ml-100k/u.data, items.csv, posters/.",
    "files": "Your own data: items.csv|parquet and interactions.csv|parquet (+ image paths).",
}

# (dotted config key, label, kind) of the knobs the form shows; kind picks the widget.
KNOBS: tuple[tuple[str, str, str], ...] = (
    ("model.fusion.num_queries", "Queries N_q", "int"),
    ("model.fusion.num_layers", "Q-Former layers", "int"),
    ("model.fusion.dim", "Content dim D", "int"),
    ("model.fusion.modalities", "Modalities fused", "multi"),
    ("model.history.strategy", "History strategy", "choice"),
    ("model.history.lora_rank", "LoRA rank r", "int"),
    ("data.max_history", "Sequence length L", "int"),
    ("model.cic.temperature", "CIC temperature τ", "float"),
    ("model.cic.weight", "CIC weight λ", "float"),
    ("train.lr_content", "LR content", "float"),
    ("train.lr_ranker", "LR ranker", "float"),
    ("train.epochs", "Epochs", "int"),
    ("train.max_steps_per_epoch", "Max steps/epoch", "int"),
    ("train.batch_size", "Batch size", "int"),
    ("train.seed", "Seed", "int"),
    ("train.device", "Device", "choice"),
)
CHOICES = {"model.history.strategy": HISTORY_STRATEGIES, "train.device": DEVICES, "model.ranker.kind": RANKERS,
           "model.fusion.modalities": MODALITIES}
# What an empty Ablations page offers to train: does content help, and does each modality carry its part?
DEMO_GRID = ("id_only", "em3", "em3_image_only", "em3_text_only")


def check_dataset_dir(path: str, kind: str) -> Path:
    """The resolved directory if it looks like a `kind` dataset; ConfigError saying what is wrong otherwise."""
    if not path.strip():
        raise ConfigError("data.data_dir: give the dataset directory")
    try:
        return _check_dir(path, kind)
    except ConfigError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:   # name too long, unknown ~user, NUL byte
        raise ConfigError(f"data.data_dir: {path.strip()[:200]!r} is not a usable path ({exc.__class__.__name__}: "
                          f"{str(exc)[:120]})") from None


def _check_dir(path: str, kind: str) -> Path:
    p = Path(path.strip()).expanduser()
    if not p.exists():
        raise ConfigError(f"data.data_dir: {p} does not exist")
    if not p.is_dir():
        raise ConfigError(f"data.data_dir: {p} is not a directory")
    if not os.access(p, os.R_OK | os.X_OK):
        raise ConfigError(f"data.data_dir: {p} is not readable")
    if kind == "movielens":
        needed = [p / "ml-100k" / "u.data", p / "items.csv"]
        missing = [str(f.relative_to(p)) for f in needed if not f.is_file()]
    else:
        missing = [f"{stem}.csv or {stem}.parquet" for stem in ("items", "interactions")
                   if not any((p / f"{stem}{ext}").is_file() for ext in (".csv", ".parquet"))]
    if missing:
        raise ConfigError(f"data.data_dir: {p} lacks {', '.join(missing)} (expected layout of a {kind} dataset)")
    return p.resolve()


def base_config(dataset: str, arm: str, *, data_dir: str = "") -> Config:
    """The preset behind a dataset choice with the arm applied (paths checked for real datasets)."""
    if dataset in ("tiny", "demo", "audio"):
        cfg = with_overrides(Config(), PRESETS[dataset])
    else:
        directory = str(check_dataset_dir(data_dir, dataset))
        source = "movielens-100k" if dataset == "movielens" else "files"
        cfg = with_overrides(Config(), {**PRESETS["movielens"], "data.source": source, "data.data_dir": directory})
    return with_arm(cfg, arm)


def demo_grid() -> list[Config]:
    """The demo preset once per DEMO_GRID arm (its own seed, ranker and epochs): a first group to compare."""
    return [base_config("demo", arm) for arm in DEMO_GRID]


def knob_defaults(cfg: Config) -> dict[str, Any]:
    flat = flatten(cfg)
    return {key: flat[key] for key, _, _ in KNOBS}


def knob_help(key: str) -> str:
    return field_help(key)


# Keys that "More settings" refuses on both forms, with the widget that sets them instead.
FORM_OWNED = {"model.arm": "the Arm picker", "model.ranker.kind": "the Ranker picker",
              "data.source": "the Dataset choice", "data.preset": "the Dataset choice",
              "data.data_dir": "the Dataset directory field"}
# ... and on each form: the Launch form's main knobs; the Ablations grid's seeds and epochs.
LAUNCH_OWNED = {**FORM_OWNED, **{key: f"the main knob {label!r}" for key, label, _ in KNOBS}}
GRID_OWNED = {**FORM_OWNED, "train.seed": "the Seeds picker", "train.epochs": "the Epochs field"}


def parse_more_settings(text: str, *, owned: Mapping[str, str] = LAUNCH_OWNED) -> dict[str, str]:
    """A "More settings" box: one `key=value` per line, the CLI's `--set` syntax; blank lines and `# ...`
    comments skipped. ConfigError naming the line for a line without '=', a key given twice, or a key the
    form sets with a widget of its own (`owned`: key -> that widget). Values stay strings: the config
    coerces and validates them, and names the field of a bad one."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise ConfigError(f"More settings, line {n} ({raw.strip()!r}): expected key=value")
        key, value = (part.strip() for part in line.split("=", 1))
        if key in out:
            raise ConfigError(f"More settings, line {n}: {key} is given twice")
        if key in owned:
            raise ConfigError(f"More settings, line {n}: {key} is set by {owned[key]}")
        out[key] = value
    return out


def settings_table(cfg: Config, *, owned: Mapping[str, str] = LAUNCH_OWNED) -> list[dict[str, str]]:
    """Every config field with its value in `cfg` and its help: what a "More settings" box can change
    (the keys its form sets with widgets of their own left out)."""
    return [{"key": key, "value": str(value), "help": field_help(key)}
            for key, value in flatten(cfg).items() if key not in owned]


def build_config(dataset: str, arm: str, *, ranker: str, knobs: dict[str, Any], data_dir: str = "",
                 more: str = "") -> Config:
    """The config a Start click runs: the preset and arm, the main knobs, the ranker, then the "More settings"
    lines; ConfigError (the config's own message, naming the field) if any value is invalid."""
    cfg = base_config(dataset, arm, data_dir=data_dir)
    return with_overrides(cfg, {**knobs, "model.ranker.kind": ranker, **parse_more_settings(more)})


def dataset_tag(cfg: Config) -> str:
    """The em3.dataset tag value of a config (synthetic-tiny, synthetic-demo, movielens-100k, files)."""
    return f"synthetic-{cfg.data.preset}" if cfg.data.source == "synthetic" else cfg.data.source


def arm_names() -> list[str]:
    return list(ARMS)
