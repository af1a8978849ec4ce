"""The speed bench: one training epoch + validation per row, each speed lever on and off, with val AUC beside it.

Every row is the MovieLens preset (or tiny synthetic, --quick) with an arm and a few overrides,
trained for exactly one epoch from the same seed in a fresh process (em3.bench.speed_probe), so
rows compare time *and* the validation AUC reached with the same training budget. Results are
kept in a JSON file after every row, keyed by config hash, so an interrupted bench resumes.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from em3.bench.runs import config_hash
from em3.config import Config, flatten, preset, to_dict, with_arm, with_overrides
from em3.models.precision import resolve_compute_dtype
from em3.paths import REPO_ROOT

SECTION = "## Speed (CPU training, MovieLens-100K)"
# Every lever at the value of the code before the levers existed.
ALL_OFF: dict[str, Any] = {"speed.prenorm_tokens": False, "speed.project_once": False,
                           "speed.queries_only_last_layer": False, "speed.din_split_attention": False,
                           "speed.merge_lora_history": False,
                           "speed.eval_item_cache": False, "speed.keep_heap": False, "speed.compute_dtype": "fp32",
                           "speed.fast_dropout": False, "speed.fill_uninitialized": True,
                           "speed.fold_token_proj": False, "speed.fold_attention": False,
                           "speed.din_table_keys": False, "speed.shared_token_reads": False,
                           "speed.din_fused_unit": False, "speed.din_pack_history": False,
                           "speed.pool_mean_tokens": False, "speed.din_pair_scores": False}

# name -> (arm, overrides on top of the base). Lever rows switch one thing of the `em3` row.
OLD_PRESET: dict[str, Any] = {"train.batch_size": 256, "speed.compute_dtype": "fp32",      # the movielens preset
                               "train.lr_ranker": 1e-3, "train.lr_content": 1e-3}        # until session 5
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "id_only": ("id_only", {}),
    "precomputed": ("precomputed", {}),
    "em3": ("em3", {}),
    "em3_shared_history": ("em3_shared_history", {}),
    "em3_mean_fusion": ("em3_mean_fusion", {}),
    "em3_mean_fusion, pool_mean_tokens off": ("em3_mean_fusion", {"speed.pool_mean_tokens": False}),
    "em3, every lever off, batch 256 (the old code path)": ("em3", {**OLD_PRESET, **ALL_OFF}),
    "em3, prenorm_tokens off": ("em3", {"speed.prenorm_tokens": False}),
    "em3, project_once off": ("em3", {"speed.project_once": False}),
    "em3, fold_token_proj on": ("em3", {"speed.fold_token_proj": True}),
    "em3, fold_attention off": ("em3", {"speed.fold_attention": False}),
    "em3, queries_only_last_layer off": ("em3", {"speed.queries_only_last_layer": False}),
    "em3, merge_lora_history off": ("em3", {"speed.merge_lora_history": False}),
    "em3, din_split_attention off": ("em3", {"speed.din_split_attention": False}),
    "em3, din_table_keys off": ("em3", {"speed.din_table_keys": False}),
    "id_only, din_table_keys off": ("id_only", {"speed.din_table_keys": False}),
    "em3, shared_token_reads off": ("em3", {"speed.shared_token_reads": False}),
    "em3, din_pack_history off": ("em3", {"speed.din_pack_history": False}),
    "id_only, din_pack_history off": ("id_only", {"speed.din_pack_history": False}),
    "em3, din_fused_unit off (so no packing)": ("em3", {"speed.din_fused_unit": False}),
    "id_only, din_fused_unit off (so no packing)": ("id_only", {"speed.din_fused_unit": False}),
    "em3, eval_item_cache off": ("em3", {"speed.eval_item_cache": False}),
    "em3, din_pair_scores off": ("em3", {"speed.din_pair_scores": False}),          # the top-K column's lever
    "id_only, din_pair_scores off": ("id_only", {"speed.din_pair_scores": False}),
    "em3, keep_heap off": ("em3", {"speed.keep_heap": False}),
    "em3, fast_dropout off": ("em3", {"speed.fast_dropout": False}),
    "em3, fill_uninitialized on": ("em3", {"speed.fill_uninitialized": True}),
    "em3, token_pca 256": ("em3", {"speed.token_pca": 256}),
    "em3, token_pca 128": ("em3", {"speed.token_pca": 128}),
    "em3, compute_dtype fp32": ("em3", {"speed.compute_dtype": "fp32"}),
    "em3, compute_dtype bf16": ("em3", {"speed.compute_dtype": "bf16"}),
    "em3, ranker_dtype bf16": ("em3", {"speed.ranker_dtype": "bf16"}),
    "id_only, ranker_dtype bf16": ("id_only", {"speed.ranker_dtype": "bf16"}),
    "em3, deterministic off": ("em3", {"train.deterministic": False}),     # reproducibility, not speed: its cost
    "em3, threads 1": ("em3", {"speed.threads": 1}),                         # the pool sized to the cores (2), halved
    "id_only, threads 1": ("id_only", {"speed.threads": 1}),
    "em3, batch 256, fp32, lr 1e-3 (the preset until session 5)": ("em3", OLD_PRESET),
    "em3, batch 256, bf16, lr 1e-3": ("em3", {**OLD_PRESET, "speed.compute_dtype": "bf16"}),
    "id_only, batch 256, fp32, lr 1e-3": ("id_only", OLD_PRESET),
    "em3, batch 2048": ("em3", {"train.batch_size": 2048}),
    "id_only, batch 2048": ("id_only", {"train.batch_size": 2048}),
}
QUICK_ROWS = ("id_only", "em3", "em3, every lever off, batch 256 (the old code path)")
QUICK_SETS: dict[str, Any] = {"train.max_steps_per_epoch": 3, "train.batch_size": 64}


def base_config(*, data: str, quick: bool, sets: Mapping[str, str]) -> Config:
    cfg = preset("tiny" if data == "synthetic" else "movielens")
    if quick:
        cfg = with_overrides(cfg, QUICK_SETS)
    return with_overrides(cfg, {"train.device": "cpu", **dict(sets)})


def row_config(base: Config, name: str, *, quick: bool = False) -> Config:
    """The row's config: its arm and overrides on the base; with --quick the quick budget wins over them."""
    arm, overrides = ROWS[name]
    return with_overrides(with_arm(base, arm), {**overrides, **(QUICK_SETS if quick else {})})


def probe(cfg: Config, *, timeout_s: float = 3600) -> dict[str, Any]:
    """One row in a fresh Python process; {'error': ...} when it fails."""
    spec = json.dumps({"config": to_dict(cfg)})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        proc = subprocess.run([sys.executable, "-m", "em3.bench.speed_probe", spec], capture_output=True, text=True,
                              env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("SPEED ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(line[len("SPEED "):])


def row_key(cfg: Config) -> str:
    """A row's identity in the JSON file: every field, those the config hash leaves out included (a speed
    row with speed.fold_token_proj on is another measurement, though the same experiment)."""
    return hashlib.sha1(json.dumps({k: str(v) for k, v in flatten(cfg).items()}, sort_keys=True).encode()).hexdigest()[:16]


def default_json(base: Config) -> Path:
    return REPO_ROOT / ".cache" / "bench" / f"speed-{config_hash(base)[:10]}.json"


def run_speed(*, data: str, quick: bool, sets: Mapping[str, str], rows: Sequence[str], command: str,
              json_out: str = "", write: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every row not yet in the JSON file (same config hash); write the table; return the results."""
    base = base_config(data=data, quick=quick, sets=sets)
    path = Path(json_out) if json_out else default_json(base)
    result: dict[str, Any] = {"command": command, "data": data, "quick": quick, "rows": []}
    if path.exists():
        result["rows"] = json.loads(path.read_text()).get("rows", [])
    done = {r["config_hash"] for r in result["rows"] if "error" not in r}
    result["rows"] = [r for r in result["rows"] if "error" not in r]
    for name in rows:
        cfg = row_config(base, name, quick=quick)
        h = row_key(cfg)
        if h in done:
            log(f"  {name}: already measured ({path})")
            continue
        t0 = time.perf_counter()
        r = probe(cfg)
        r.update(name=name, config_hash=h, arm=cfg.model.arm, dtype=resolve_compute_dtype(cfg.speed.compute_dtype),
                 finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        if "error" in r:
            log(f"  {name}: FAILED {r['error']}")
        else:
            result["rows"] = [x for x in result["rows"] if x["name"] != name] + [r]
            log(f"  {name}: train {r['train_epoch_s']:.1f} s + val {r['val_epoch_s']:.1f} s, "
                f"{r['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s, val AUC {r['val_auc']:.4f} "
                f"({time.perf_counter() - t0:.0f} s)")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))   # after every row: an interrupted bench keeps it
    if write:
        from em3.bench.report import machine_line, write_block
        from em3.bench.speed_table import render

        write_block(render(result, machine=machine_line(), order=list(ROWS)), section=SECTION, name="speed")
    return result
