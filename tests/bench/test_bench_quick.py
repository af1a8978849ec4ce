"""Both quick benches end to end on the tiny synthetic preset, so the bench code cannot rot (no timing asserts)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from em3.bench import quality, quality_table
from em3.bench.cli import efficiency_main, quality_main
from em3.bench.efficiency import base_config as eff_base
from em3.bench.efficiency import run_efficiency, variant_config
from em3.bench.runs import group_runs

pytestmark = pytest.mark.slow


def test_quick_quality_trains_every_cell_then_resumes(fresh_store: Path, tmp_path: Path, capsys):
    argv = ["--quick", "--data", "synthetic", "--arms", "id_only,em3", "--rankers", "dcnv2", "--no-write"]
    assert quality_main(argv) == 0
    first = capsys.readouterr().out
    assert "trained 2 run(s); table: 2/2 runs finished" in first
    # Second call: every config hash already FINISHED in the group -> nothing trained.
    assert quality_main(argv) == 0
    assert "trained 0 run(s); table: 2/2 runs finished" in capsys.readouterr().out
    spec = quality.QualitySpec(base=quality.base_config(data="synthetic", quick=True), arms=("id_only", "em3"),
                               rankers=("dcnv2",), seeds=(0,))
    runs = group_runs(spec.group)
    assert len(runs) == 2 and {r.tags["em3.kind"] for r in runs} == {"ctr"}
    cells = quality.collect(spec)
    text = quality_table.render(spec, cells, command="c", machine="m", figure=quality_table.figure(
        cells, path=tmp_path / "fig.png"))
    for arm in ("id_only", "em3"):
        assert f"| {arm} | dcnv2 | 1/1 |" in text
    assert (tmp_path / "fig.png").stat().st_size > 1000
    # The CIC table: the em3 run logged its shared-space metrics; id_only (no CIC heads) has none.
    assert "Did CIC align anything?" in text and "| em3 | dcnv2 | 1 |" in text and "| id_only | dcnv2 | 1 |" not in text


def test_alignment_backfill_recomputes_what_a_run_logged_from_its_own_export(fresh_store: Path, capsys):
    """A run logged before align/catalogue_* gets them from explain/embeddings.npz: the values the run logs itself."""
    from dataclasses import replace

    from em3.bench.runs import backfill_alignment, finished_by_hash
    from em3.training.tracking import client

    argv = ["--quick", "--data", "synthetic", "--arms", "em3,id_only", "--rankers", "din", "--no-write"]
    assert quality_main(argv) == 0
    done = finished_by_hash(quality.QualitySpec(base=quality.base_config(data="synthetic", quick=True)).group)
    em3_run = next(r for r in done.values() if r.arm == "em3")
    logged = {k: v for k, v in em3_run.metrics.items() if k.startswith("align/") and k != "align/alignment"
              and k != "align/uniformity"}
    assert "align/catalogue_alignment" in logged and 0 < logged["align/warm_items"]
    old = {h: replace(r, metrics={k: v for k, v in r.metrics.items() if k not in logged}) for h, r in done.items()}
    assert backfill_alignment(old) == 1                                  # the em3 run; id_only has no CIC heads
    (again,) = [r for r in old.values() if r.arm == "em3"]
    assert {k: again.metrics[k] for k in logged} == pytest.approx(logged)
    history = client().get_metric_history(em3_run.run_id, "align/top1_content_to_id")
    assert len(history) == 2 and history[0].value == pytest.approx(history[1].value)
    assert backfill_alignment(old) == 0                                  # nothing left to fill


def test_offline_records_import_as_runs(fresh_store: Path, tmp_path: Path, capsys):
    off = tmp_path / "off"
    argv = ["--quick", "--data", "synthetic", "--arms", "id_only", "--rankers", "din", "--no-write"]
    assert quality_main([*argv, "--offline-dir", str(off)]) == 0
    assert len(list(off.glob("*.json"))) == 1
    assert quality_main([*argv, "--import-offline", str(off)]) == 0
    out = capsys.readouterr().out
    assert "imported 1 run record(s)" in out and "trained 0 run(s); table: 1/1" in out
    runs = group_runs(quality.QualitySpec(base=quality.base_config(data="synthetic", quick=True)).group)
    assert len(runs) == 1 and runs[0].tags["em3.imported_from"].startswith("offline:")
    assert 0.0 <= runs[0].metrics["test/auc"] <= 1.0


def test_exported_runs_are_skipped_offline_and_never_imported_back(fresh_store: Path, tmp_path: Path, capsys):
    argv = ["--quick", "--data", "synthetic", "--arms", "id_only", "--rankers", "din", "--no-write"]
    assert quality_main(argv) == 0                                     # one run in MLflow
    off = tmp_path / "off"
    assert quality_main([*argv, "--export-offline", str(off)]) == 0
    (rec,) = [json.loads(p.read_text()) for p in off.glob("*.json")]
    assert rec["exported_from"] and 0.0 <= rec["metrics"]["val/auc"] <= 1.0
    capsys.readouterr()
    assert quality_main([*argv, "--offline-dir", str(off)]) == 0      # the offline pool finds it done
    assert "trained 0 run(s)" in capsys.readouterr().out
    assert quality_main([*argv, "--arms", "id_only,precomputed", "--offline-dir", str(off)]) == 0
    assert len(list(off.glob("*.json"))) == 2                          # only the missing arm was trained
    assert quality_main([*argv, "--arms", "id_only,precomputed", "--import-offline", str(off)]) == 0
    assert "imported 1 run record(s)" in capsys.readouterr().out       # the exported one is not copied back
    group = quality.QualitySpec(base=quality.base_config(data="synthetic", quick=True)).group
    assert sorted(r.tags["em3.arm"] for r in group_runs(group)) == ["id_only", "precomputed"]


def test_offline_pool_of_workers_trains_each_run_once(fresh_store: Path, tmp_path: Path, capsys):
    off = tmp_path / "off"
    off.mkdir()
    (off / "deadbeef.claim").write_text("1\n")          # a stale claim of a killed pool
    argv = ["--quick", "--data", "synthetic", "--arms", "id_only,em3", "--rankers", "din", "--no-write",
            "--offline-dir", str(off)]
    assert quality_main([*argv, "--workers", "2"]) == 0
    records = [json.loads(p.read_text()) for p in off.glob("*.json")]
    assert sorted(r["run_name"] for r in records) == ["em3-din-s0", "id_only-din-s0"]
    assert len(list(off.glob("*.claim"))) == 2 and not (off / "deadbeef.claim").exists()
    assert "dropped 1 stale claim" in capsys.readouterr().out


def test_quick_efficiency_rows_and_ratios(fresh_store: Path, tmp_path: Path):
    out = tmp_path / "eff.json"
    result = run_efficiency(data="synthetic", quick=True, sets={}, lengths=(5,), steps=1, warmup=1, device="cpu",
                            write=False, command="c", log=lambda s: None, json_out=str(out),
                            variants=("id_only", "lora", "lora, no dedup"))
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"id_only", "lora", "lora, no dedup"} and not any("error" in r for r in rows.values())
    assert rows["id_only"]["step_ms_x"] == 1.0 and rows["id_only"]["params_total_x"] == 1.0
    assert rows["lora"]["params_total_x"] > 1.0 and rows["lora"]["flops"] > rows["id_only"]["flops"] > 0
    assert rows["lora"]["history_params_trainable"] > 0
    # Dedup off encodes every history slot: more FLOPs than with dedup, same parameters.
    assert rows["lora, no dedup"]["flops"] > rows["lora"]["flops"]
    assert rows["lora, no dedup"]["params_total"] == rows["lora"]["params_total"]
    assert json.loads(out.read_text())["rows"][0]["variant"] == "id_only"
    runs = group_runs(result["group"], kind="efficiency")
    assert len(runs) == 3
    # The CLI renders a result file from elsewhere without measuring again.
    from em3.bench import efficiency_table

    md = efficiency_table.render(result, machine="m", figures=efficiency_table.figures(result, suffix="test",
                                                                                  directory=tmp_path))
    assert md.count("| 5 |") == 3
    # MFU per dtype: the FLOP split sums to the count, and each row gets the cell (this preset runs fp32 alone)
    assert set(result["peaks"]) >= {"fp32"} and all(v > 0 for v in result["peaks"].values())
    for r in rows.values():
        assert sum(r["flops_by_dtype"].values()) == r["flops"]
    lora_line = next(line for line in md.splitlines() if line.startswith("| 5 | lora |"))
    assert re.search(r"\| \d+\.\d% \(\d+%\) \|", lora_line), lora_line
    assert efficiency_main(["--from-json", str(out), "--no-write"]) == 0
    assert len(group_runs(result["group"], kind="efficiency")) == 6


def test_live_backbones_match_the_cached_tokens():
    """The no-cache lever computes the same tokens as the feature cache (float16 storage aside)."""
    from em3.bench.live_tokens import LiveTokenStore
    from em3.data.cache import build_item_tokens
    from em3.data.load import load_dataset
    from em3.data.samples import build_samples
    from em3.models.content import ItemTokenStore

    cfg, _ = variant_config(eff_base(data="synthetic", sets={}, device="cpu"), "lora, live backbones", 5)
    raw = load_dataset(cfg.data)
    samples = build_samples(raw, cfg.data)
    cached = ItemTokenStore(build_item_tokens(raw, samples, cfg.encoder, progress=False))
    live = LiveTokenStore(raw, samples, cfg.encoder)
    items = torch.tensor([0, 1, 2, samples.num_items])
    got, want = live(items), cached(items)
    assert list(got) == list(want) == ["image", "text"]
    for a, b in ((x, y) for m in got for x, y in zip(got[m], want[m])):
        assert a.shape == b.shape
        if a.dtype == torch.bool:
            assert torch.equal(a, b)
        else:
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-2, rtol=2e-2)


def test_quick_speed_measures_rows_renders_them_and_resumes(tmp_path: Path, capsys):
    from em3.bench.cli import speed_main
    from em3.bench.speed import ROWS
    from em3.bench.speed_table import render

    out = tmp_path / "speed.json"
    argv = ["--quick", "--data", "synthetic", "--rows", "id_only;em3, every lever off, batch 256 (the old code path)",
            "--no-write", "--json-out", str(out)]
    assert speed_main(argv) == 0
    result = json.loads(out.read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert set(rows) == {"id_only", "em3, every lever off, batch 256 (the old code path)"}
    for r in rows.values():
        assert r["steps"] == 3 and r["samples"] == 3 * 64            # the quick budget: 3 steps of 64
        assert r["train_epoch_s"] > 0 and r["val_epoch_s"] > 0 and 0.0 < r["val_auc"] < 1.0
        assert r["topk_s"] > 0 and r["topk_users"] > 0                # the top-K ranking a run ends with
        assert r["flops_per_step"] > 0 and r["peak_fp32"] > 0 and r["peak_memory_mb"] > 0
        assert sum(r["flops_by_dtype"].values()) == pytest.approx(r["flops_per_step"])   # the roofline's split
    assert rows["em3, every lever off, batch 256 (the old code path)"]["flops_per_step"] > rows["id_only"]["flops_per_step"]
    text = render(result, machine="m", order=list(ROWS))
    assert "| id_only | 64 | fp32 |" in text and "| em3, every lever off, batch 256 (the old code path) | 64 | fp32 |" in text
    capsys.readouterr()
    assert speed_main(argv) == 0                                       # resumed: nothing measured again
    assert capsys.readouterr().out.count("already measured") == 2
    assert speed_main(["--rows", "no such row", "--no-write"]) == 2


def test_the_ledger_carries_a_table_into_a_checkout_without_its_store(fresh_store: Path, tmp_path: Path,
                                                                       monkeypatch, capsys):
    """Session 5's 49 table runs were lost with mlruns/ (never committed): the committed ledger keeps them."""
    from em3.bench import ledger
    from em3.bench.runs import finished_by_hash

    argv = ["--quick", "--data", "synthetic", "--arms", "id_only,em3", "--rankers", "din", "--no-write"]
    assert quality_main(argv) == 0
    group = quality.QualitySpec(base=quality.base_config(data="synthetic", quick=True)).group
    done = finished_by_hash(group)
    assert ledger.save_group(group, done) == 2 and ledger.save_group(group, done) == 0   # one record per run
    records = ledger.recorded(group)
    assert set(records) == set(done)
    rec = next(r for r in records.values() if r["tags"]["em3.arm"] == "em3")
    assert rec["config"]["model"]["arm"] == "em3" and "align/catalogue_alignment" in rec["metrics"]
    assert not any(k.startswith("train/") for k in rec["metrics"])    # summaries only: no curves, no weights
    # a new checkout: empty store, same ledger -> restored, nothing retrained, the same numbers in the table
    monkeypatch.setenv("EM3_MLRUNS_DIR", str(tmp_path / "new-checkout" / "mlruns"))
    capsys.readouterr()
    assert quality_main(argv) == 0
    out = capsys.readouterr().out
    assert "imported 2 run record(s)" in out and "trained 0 run(s); table: 2/2 runs finished" in out
    again = finished_by_hash(group)
    assert set(again) == set(done)
    for h, r in again.items():
        assert r.tags["em3.imported_from"] == f"ledger:{h}.json"
        assert r.metrics["test/auc"] == pytest.approx(done[h].metrics["test/auc"])
    assert ledger.save_group(group, again) == 0                         # imported runs are not recorded twice
    assert quality_main([*argv, "--no-ledger"]) == 0 and "imported" not in capsys.readouterr().out
