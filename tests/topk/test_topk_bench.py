"""`python -m em3 bench topk --quick`: runs end to end, logs to MLflow, resumes, writes only its section."""
from __future__ import annotations

from pathlib import Path

import pytest

from em3.cli.bench import main as bench_main
from em3.topk.results import SECTION, replace_section


def test_replace_section_keeps_the_other_sections(tmp_path: Path):
    p = tmp_path / "RESULTS.md"
    p.write_text(f"# Results\n\n## Quality\n\nq table\n\n{SECTION}\n\nold\n\n## Efficiency\n\ne table\n")
    replace_section(p, "new table")
    text = p.read_text()
    assert "q table" in text and "e table" in text and "new table" in text and "old" not in text
    assert text.index("## Quality") < text.index(SECTION) < text.index("## Efficiency")
    fresh = tmp_path / "none.md"
    replace_section(fresh, "first")
    assert fresh.read_text().startswith("# Results") and SECTION in fresh.read_text()


@pytest.mark.slow
def test_quick_bench_logs_resumes_and_writes(fresh_store: Path, tmp_path: Path, capsys):
    from em3.training.tracking import client, experiment_id

    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n## Quality (CTR)\n\nkeep me\n")
    argv = ["topk", "--quick", "--models", "lightgcn,em3_freedom", "--epochs", "2", "--results", str(results)]
    assert bench_main(argv) == 0
    c = client()
    runs = c.search_runs([experiment_id(c)], filter_string="tags.`em3.kind` = 'topk'")
    assert sorted(r.data.tags["em3.arm"] for r in runs) == ["em3_freedom", "lightgcn"]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["em3.dataset"] == "synthetic-tiny" and r.data.tags["em3.group"].startswith("topk-")
        assert {"val/recall_at_20", "test/ndcg_at_10", "test/precision_at_50", "best_epoch"} <= set(r.data.metrics)
        assert r.data.params["topk.epochs"] == "2"
        curve = [m.value for m in c.get_metric_history(r.info.run_id, "val/epoch_recall_at_20")]
        assert len(curve) == 2 and r.data.metrics["val/recall_at_20"] == max(curve)   # final = best epoch's
    text = results.read_text()
    assert "keep me" in text and SECTION in text and "| EM3 (on FREEDOM) |" in text and "Amazon" in text

    capsys.readouterr()
    assert bench_main(argv) == 0                                  # resumable: nothing retrained
    assert capsys.readouterr().out.count("(reused)") == 2
    assert len(c.search_runs([experiment_id(c)], filter_string="tags.`em3.kind` = 'topk'")) == 2

    # --report-only trains nothing and lists the cells it lacks
    assert bench_main([*argv[:3], "lightgcn,vbpr", *argv[4:], "--report-only"]) == 0
    assert "Missing (not finished when the table was written): vbpr seed 0" in results.read_text()
    assert "\n| LightGCN |" in results.read_text() and "\n| VBPR |" not in results.read_text()   # row starts
    assert len(c.search_runs([experiment_id(c)], filter_string="tags.`em3.kind` = 'topk'")) == 2


def test_unknown_kind_and_model_fail_clearly(capsys):
    with pytest.raises(SystemExit):
        bench_main(["nope"])
    assert "unknown kind 'nope'" in capsys.readouterr().err
    assert bench_main(["topk", "--quick", "--models", "bpr", "--results", ""]) == 2
    assert "unknown model 'bpr'" in capsys.readouterr().err
