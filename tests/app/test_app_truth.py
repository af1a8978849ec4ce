"""The pages say what their numbers mean (issue 14): efficiency, custom arms, alignment spaces, attention, test period.

A store of fake runs by the contract (tests/app/fake_training.py, no training), opened with AppTest.
Launch and Ablations queue into a registry whose trainer is the fake one (conftest's fake_registry).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from em3.config import preset, with_arm, with_overrides
from em3.paths import tracking_uri
from tests.app.fake_training import fake_train
from tests.app.test_app_pages import open_page, texts

EFFICIENCY = {"params/trainable": 12345.0, "params/total": 1234567.0, "params/history_trainable": 2048.0,
              "time/train_seconds_per_epoch": 12.3456, "time/val_seconds_per_epoch": 0.5,
              "perf/samples_per_s": 8421.7, "perf/peak_memory_mb": 1536.25,
              "time/setup_seconds": 4.5, "time/train_seconds": 61.5, "time/val_seconds": 2.0,
              "time/epoch_end_seconds": 1.1, "time/eval_seconds": 0.8, "time/topk_seconds": 3.7,
              "time/explain_seconds": 1.2}


def _tiny(arm: str = "em3", **overrides):
    return with_overrides(with_arm(preset("tiny"), arm), {"train.epochs": 1, **overrides})


@pytest.fixture(scope="module")
def truth_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Run ids by role: 'eff' (em3, efficiency metrics, shared space), 'nocic' (no shared space), 'custom', 'old'."""
    root = tmp_path_factory.mktemp("truth") / "mlruns"
    old = os.environ.get("EM3_MLRUNS_DIR")
    os.environ["EM3_MLRUNS_DIR"] = str(root)
    try:
        ids = {
            "old": fake_train(_tiny(), run_name="older-run", explain=True).run_id,
            "nocic": fake_train(_tiny("em3_no_cic"), run_name="no-cic", explain=True).run_id,
            "custom": fake_train(_tiny(**{"model.history.strategy": "shared"}), run_name="shared-history").run_id,
            "four": fake_train(_tiny(**{"model.fusion.modalities": ("image", "text", "tabular", "audio")}),
                               run_name="four-modalities", explain=True).run_id,
            "eff": fake_train(_tiny(), run_name="efficient", explain=True, metrics=EFFICIENCY, tags={
                "em3.device": "cuda (NVIDIA H200)", "em3.memory_kind": "CUDA allocator peak"}).run_id,
        }
        client = MlflowClient(tracking_uri=tracking_uri())
        # item 2 lost its tokens in this export: the page must not show row 1's (item 1's) tokens instead
        client.log_text(ids["old"], json.dumps({"1": ["tok1_0", "tok1_1"]}), "explain/text_tokens.json")
        # user 1 of the tiny data: 42 is positive in their test period, 7 is not
        client.log_text(ids["eff"], json.dumps({"1": [[42, 0.9], [7, 0.8]]}), "explain/recommendations.json")
    finally:
        if old is None:
            os.environ.pop("EM3_MLRUNS_DIR", None)
        else:
            os.environ["EM3_MLRUNS_DIR"] = old
    return {**ids, "root": str(root)}


@pytest.fixture
def store(truth_store, use_store) -> dict[str, str]:
    use_store(Path(truth_store["root"]))
    return truth_store


def _frame_with_row(at, label: str):
    for df in at.dataframe:
        if label in list(df.value.index):
            return df.value
    raise AssertionError(f"no table with a {label!r} row")


def test_runs_page_efficiency_panel_shows_what_the_run_logged(store):
    at = open_page("runs")
    at.multiselect(key="runs-pick").set_value([store["eff"], store["old"]]).run()
    assert not at.exception, [e.value for e in at.exception]
    table = _frame_with_row(at, "Trainable parameters")
    eff = table[[c for c in table.columns if c.startswith("efficient")][0]]
    assert eff["Trainable parameters"] == "12,345 (1.0% of 1,234,567)"
    assert eff["History-path trainable parameters"] == "2,048"
    assert eff["Train seconds / epoch"] == "12.35 s" and eff["Validation seconds / epoch"] == "0.50 s"
    assert eff["Training samples / s"] == "8,422"
    assert eff["Peak memory"] == "1,536.2 MiB (CUDA allocator peak)" and eff["Device"] == "cuda (NVIDIA H200)"
    older = table[[c for c in table.columns if c.startswith("older-run")][0]]
    assert older["Trainable parameters"] == "not logged" and older["Device"] == "cpu"
    # where the time went: one stacked bar per run that logged its timers, the parts in the order they are spent
    stacked = [spec for spec in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
               if spec["layout"].get("barmode") == "stack"]
    assert len(stacked) == 1
    parts = {trace["name"]: trace["x"] for trace in stacked[0]["data"]}
    assert list(parts) == ["setup: data, cache, model", "training", "validation", "per-epoch extras",
                           "final evaluation", "top-K ranking", "explain artifacts"]
    assert [x[0] for x in parts.values()] == [4.5, 61.5, 2.0, 1.1, 0.8, 3.7, 1.2]
    assert all(len(trace["y"]) == 1 and trace["y"][0].startswith("efficient") for trace in stacked[0]["data"])


def test_runs_page_diffs_the_params_of_the_selected_runs(store):
    """The run list no longer carries params (the sqlite fast path reads none): the diff reads them per run."""
    at = open_page("runs")
    at.multiselect(key="runs-pick").set_value([store["custom"], store["eff"]]).run()
    assert not at.exception, [e.value for e in at.exception]
    diff = _frame_with_row(at, "model.history.strategy")
    assert sorted(diff.loc["model.history.strategy"].tolist()) == ["lora", "shared"]
    assert "train.epochs" not in diff.index   # equal in both runs


def test_runs_page_shows_a_contradicting_run_as_custom(store):
    at = open_page("runs")
    runs = at.dataframe[0].value.set_index("name")
    assert runs.loc["shared-history", "arm"] == "custom (from em3)"
    assert runs.loc["efficient", "arm"] == "em3"
    assert "**custom**" in texts(at)


def test_alignment_without_cic_heads_draws_no_links_or_cosines(store):
    at = open_page("alignment")
    at.selectbox(key="al-run-0").set_value(store["nocic"]).run()
    at.selectbox(key="al-run-1").set_value(store["eff"]).run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert sum("No shared content–ID space" in w for w in warnings) == 1          # run A only
    captions = [c.value for c in at.caption if "matched pairs mean" in c.value]
    assert len(captions) == 1                                                     # run B, in its shared space
    assert "over 10 warm items" in captions[0] and "2 cold items left out" in captions[0]


def test_attention_never_shows_another_items_tokens(store):
    at = open_page("attention")
    at.selectbox(key="att-run").set_value(store["old"]).run()
    at.selectbox(key="att-item").set_value(1).run()                               # row 1 = item 2
    assert not at.exception, [e.value for e in at.exception]
    body = texts(at)
    assert "Text tokens unavailable" in body and "item 2" in body
    assert not any("tok1_0" in str(h.proto) for h in at.get("html"))


def test_attention_draws_every_fused_modality_by_its_registry_view(store):
    at = open_page("attention")
    at.selectbox(key="att-run").set_value(store["four"]).run()
    at.selectbox(key="att-item").set_value(2).run()                               # row 2 = item 3
    assert not at.exception, [e.value for e in at.exception]
    body = texts(at)
    assert "Fused modalities: **image** (4 tokens), **text** (5 tokens), **tabular** (3 tokens), **audio** (4 tokens)" in body
    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    bars = [spec for spec in charts.values() if spec["data"][0]["type"] == "bar"]
    assert sorted(tuple(b["data"][0]["x"]) for b in bars) == [tuple(f"audio3_{j}" for j in range(4)),
                                                              tuple(f"tabular3_{j}" for j in range(3))]
    assert any(spec["data"][0]["type"] == "heatmap" for spec in charts.values())   # the image grid
    assert any("text3_0" in str(h.proto) for h in at.get("html"))                  # the words, shaded
    shares = [c.value for c in at.caption if c.value.startswith("Share of this query's attention")]
    assert len(shares) == 1 and all(m in shares[0] for m in ("image", "text", "tabular", "audio"))


def test_attention_labels_din_id_and_content_weights(store):
    at = open_page("attention")
    at.selectbox(key="att-run").set_value(store["eff"]).run()
    assert not at.exception, [e.value for e in at.exception]
    bars = [p.proto.text for p in at.get("progress")]
    assert any(b.startswith("ID attention: ") for b in bars) and any(b.startswith("content attention: ") for b in bars)


def test_recommendations_say_which_period_the_hits_are_from(store):
    at = open_page("recommendations")
    at.selectbox(key="rec-run").set_value(store["eff"]).run()
    assert not at.exception, [e.value for e in at.exception]
    body = texts(at)
    assert "Shown: the test period of user 1, from 2023-11-30" in body
    assert "1 of 2 rated positively by the user in the test period" in body
    assert at.selectbox(key="rec-user").options == ["1 · 1 hit in top-2"]      # every user's hits, in the picker
    assert "Over the 1 exported users: 1 hit in 2 recommendations (1 user with at least one)" in body


def test_launch_tags_a_run_whose_knobs_contradict_its_arm_custom(fresh_store, fake_registry):
    at = open_page("launch")
    at.radio(key="launch-dataset").set_value("Synthetic tiny").run()
    at.selectbox(key="knob-tiny-em3-model.history.strategy").set_value("shared")
    at.number_input(key="knob-tiny-em3-train.epochs").set_value(1)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("tagged **custom**" in w.value and "model.history.strategy = shared" in w.value for w in at.warning)
    assert any("custom (from em3)" in s.value for s in at.success)
    job = fake_registry.wait(fake_registry.jobs()[0]["id"], timeout=60)
    assert job["arm"] == "custom (from em3)"
    tags = MlflowClient(tracking_uri=tracking_uri()).get_run(job["run_id"]).data.tags
    assert (tags["em3.arm"], tags["em3.base_arm"]) == ("custom", "em3")


def test_launch_offers_the_registry_modalities_and_the_audio_preset_fuses_three(fresh_store, fake_registry):
    at = open_page("launch")
    at.radio(key="launch-dataset").set_value("Synthetic with audio (4th modality)").run()
    knob = at.multiselect(key="knob-audio-em3-model.fusion.modalities")
    assert list(knob.value) == ["image", "text", "audio"] and set(knob.options) >= {"image", "text", "tabular", "audio"}
    at.number_input(key="knob-audio-em3-train.epochs").set_value(1)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.warning and any("(em3, synthetic-audio)" in s.value for s in at.success)   # the arm, not custom
    job = fake_registry.wait(fake_registry.jobs()[0]["id"], timeout=60)
    params = MlflowClient(tracking_uri=tracking_uri()).get_run(job["run_id"]).data.params
    assert params["model.fusion.modalities"] == "image,text,audio"
    at.multiselect(key="knob-audio-em3-model.fusion.modalities").set_value([])
    at.button[0].click().run()
    assert any("Refused: model.fusion.modalities" in e.value for e in at.error)


def test_ablations_queue_the_chosen_ranker(fresh_store, fake_registry):
    at = open_page("ablations")
    at.radio(key="abl-dataset").set_value("Synthetic tiny").run()
    at.selectbox(key="abl-ranker").set_value("dcnv2").run()
    at.multiselect(key="abl-arms").set_value(["em3", "id_only"]).run()
    at.multiselect(key="abl-seeds").set_value([0]).run()
    at.button(key="abl-go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    jobs = fake_registry.jobs()
    assert len(jobs) == 2
    snaps = [fake_registry.wait(j["id"], timeout=60) for j in jobs]
    client = MlflowClient(tracking_uri=tracking_uri())
    runs = [client.get_run(s["run_id"]) for s in snaps]
    assert {r.data.tags["em3.ranker"] for r in runs} == {"dcnv2"}
    assert {r.data.tags["em3.dataset"] for r in runs} == {"synthetic-tiny"}


def test_ablations_more_settings_reach_every_run_of_the_grid(fresh_store, fake_registry):
    """The grid's "More settings" apply to every arm x seed after the arm, as `ablate --set` does; the seeds and
    epochs stay the grid's own widgets, and a line setting them is refused before anything is queued."""
    at = open_page("ablations")
    at.radio(key="abl-dataset").set_value("Synthetic tiny").run()
    at.multiselect(key="abl-arms").set_value(["em3", "id_only"]).run()
    at.multiselect(key="abl-seeds").set_value([0, 1]).run()
    at.text_area(key="abl-more-tiny").input("train.seed=5").run()
    at.button(key="abl-go").click().run()
    assert any("train.seed is set by the Seeds picker" in e.value for e in at.error)
    assert fake_registry.jobs() == []
    at.text_area(key="abl-more-tiny").input("train.patience=5\nmodel.ranker.dropout=0.2").run()
    at.button(key="abl-go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("with `train.patience=5`, `model.ranker.dropout=0.2`" in s.value for s in at.success)
    client = MlflowClient(tracking_uri=tracking_uri())
    runs = [client.get_run(fake_registry.wait(j["id"], timeout=60)["run_id"]) for j in fake_registry.jobs()]
    assert sorted((r.data.tags["em3.arm"], r.data.params["train.seed"]) for r in runs) == [
        ("em3", "0"), ("em3", "1"), ("id_only", "0"), ("id_only", "1")]
    assert {(r.data.params["train.patience"], r.data.params["model.ranker.dropout"]) for r in runs} == {("5", "0.2")}
