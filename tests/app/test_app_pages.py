"""Every page through streamlit.testing.v1.AppTest: empty store, a store with runs of every state, Launch form."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from streamlit.testing.v1 import AppTest

from app.state import registry
from em3.paths import tracking_uri
from tests.app.conftest import PAGES

TIMEOUT = 120
MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT)
    at.run()
    if page != "launch":
        at.switch_page(f"../pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def run_ids(*names: str) -> list[str]:
    """Run ids of the current store's runs with these names (names are unique in the fixtures)."""
    client = MlflowClient(tracking_uri=tracking_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=100)
    return [r.info.run_id for n in names for r in runs if (r.info.run_name or "").endswith(n)]


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("info", "error", "warning", "caption", "markdown", "title", "subheader", "success")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_empty_store(page, fresh_store):
    at = open_page(page)
    if page in ("runs", "attention", "alignment", "recommendations"):
        assert "No runs in the MLflow store yet" in texts(at)


@pytest.mark.parametrize("page", ["launch", "runs"])
def test_mlflow_ui_hint_names_the_store_in_use(page, fresh_store):
    """The "start the MLflow UI" hint gives the store the pages read (EM3_MLRUNS_DIR here), not ./mlruns."""
    at = open_page(page)
    assert f"mlflow ui --backend-store-uri {tracking_uri()}`" in texts(at)
    assert "sqlite:///mlruns/" not in texts(at)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_runs(page, runs_store, use_store):
    use_store(runs_store)
    at = open_page(page)
    body = texts(at)
    assert not at.error, [e.value for e in at.error]
    if page == "ablations":
        assert "2 finished of 2 runs" in body
        assert at.dataframe[1].value.index.tolist() == ["em3", "em3_no_cic"]   # [0]: the grid's settings table
    if page == "runs":
        assert len(at.dataframe[0].value) == 6       # 2 real + failed + cancelled + running + old config
    if page == "attention":
        assert "Share of this query's attention: image" in body
        assert "Ranker: attention over the user's history" in body
    if page == "alignment":
        assert len(at.get("plotly_chart")) >= 4      # projection + histogram for two runs
    if page == "recommendations":
        at.selectbox(key="rec-run").set_value(run_ids("/em3-s0")[0]).run()
        body = texts(at)
        assert "Top-10 recommended" in body and "history" in body


@pytest.mark.slow
def test_runs_page_explains_failed_running_and_old_runs(runs_store, use_store):
    use_store(runs_store)
    at = open_page("runs")
    at.multiselect(key="runs-pick").set_value(run_ids("fails", "still-running", "old-config")).run()
    assert not at.exception
    body = texts(at)
    assert "loss is NaN at step 2" in "\n".join(e.value for e in at.error)
    assert "still running" in body
    assert "config version 0" in body


@pytest.mark.slow
def test_explain_pages_on_an_old_config_run_say_what_is_missing(runs_store, use_store):
    use_store(runs_store)
    at = open_page("recommendations")
    at.selectbox(key="rec-run").set_value(run_ids("old-config")[0]).run()
    assert not at.exception
    assert "could not rebuild the run's dataset" in texts(at)


def test_launch_form_refuses_invalid_value_with_config_message(fresh_store):
    at = open_page("launch")
    before = len(registry().jobs())
    at.number_input(key="knob-demo-em3-model.fusion.num_queries").set_value(0)
    at.button[0].click().run()   # the form's Start
    assert not at.exception
    assert any("model.fusion.num_queries: must be > 0, got 0" in e.value for e in at.error)
    at.number_input(key="knob-demo-em3-model.fusion.num_queries").set_value(2)
    at.number_input(key="knob-demo-em3-model.fusion.dim").set_value(30)
    at.button[0].click().run()
    assert any("D=30 is not divisible by num_heads=4" in e.value for e in at.error)
    assert len(registry().jobs()) == before


def test_launch_more_settings_reach_the_queued_config_and_bad_lines_are_refused(fresh_store, fake_registry):
    """Any config field can be set from the form ("More settings", the CLI's --set syntax); the main knobs still
    apply; a bad line, an unknown field and an invalid value are each refused with the line or field named."""
    at = open_page("launch")
    for text, message in [("train.patience", "line 1 ('train.patience'): expected key=value"),
                          ("train.seed=4", "train.seed is set by the main knob 'Seed'"),
                          ("model.arm=id_only", "model.arm is set by the Arm picker"),
                          ("train.patiense=4", "unknown config key; did you mean train.patience"),
                          ("train.patience=-1", "train.patience: must be >= 0, got -1")]:
        at.text_area(key="launch-more-demo-em3").input(text)
        at.button[0].click().run()
        assert any(message in e.value for e in at.error), (text, [e.value for e in at.error])
    assert fake_registry.jobs() == []
    at.number_input(key="knob-demo-em3-train.epochs").set_value(1)
    at.text_area(key="launch-more-demo-em3").input("# early stopping\ntrain.patience=4\n\nspeed.threads = 1")
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("with `train.patience=4`, `speed.threads=1`" in s.value for s in at.success)
    job = fake_registry.jobs()[0]
    params = MlflowClient(tracking_uri=tracking_uri()).get_run(
        fake_registry.wait(job["id"], timeout=60)["run_id"]).data.params
    assert (params["train.patience"], params["speed.threads"], params["train.epochs"]) == ("4", "1", "1")


def test_launch_refuses_a_missing_dataset_directory(fresh_store, tmp_path):
    at = open_page("launch")
    at.radio(key="launch-dataset").set_value("Files dataset (path)").run()
    at.text_input(key="launch-dir-files").input(str(tmp_path / "nope")).run()
    assert any("does not exist" in e.value for e in at.error)
    at.text_input(key="launch-dir-files").input(str(tmp_path)).run()
    assert any("lacks items.csv or items.parquet" in e.value for e in at.error)


@pytest.mark.slow
def test_start_on_tiny_preset_produces_a_finished_run(fresh_store):
    at = open_page("launch")
    at.radio(key="launch-dataset").set_value("Synthetic tiny").run()
    at.number_input(key="knob-tiny-em3-train.epochs").set_value(1)
    at.button[0].click().run()
    assert not at.exception
    assert any("Queued job" in s.value for s in at.success)
    job = registry().jobs()[0]
    snap = registry().wait(job["id"], timeout=400)
    assert snap["state"] == "finished", snap["error"]
    run = MlflowClient(tracking_uri=tracking_uri()).get_run(snap["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["em3.job"] == job["id"]
    assert 0.0 <= run.data.metrics["test/auc"] <= 1.0
    time.sleep(3.1)                          # runs_table cache ttl
    at.run()
    assert "finished" in texts(at) or any("finished" in e.label for e in at.expander)


def _test_classes(run_id: str) -> dict[str, tuple[int, int]]:
    """{user_id: (positive, negative) test samples} of the run's rebuilt dataset."""
    from em3.data.load import load_dataset
    from em3.data.samples import build_samples
    from em3.training.run import logged_config
    cfg = logged_config(run_id)
    s = build_samples(load_dataset(cfg.data), cfg.data)
    rows = s.splits["test"]
    return {str(s.user_ids[u]): (int((s.label[rows][s.user[rows] == u] > 0.5).sum()),
                                 int((s.label[rows][s.user[rows] == u] <= 0.5).sum())) for u in np.unique(s.user[rows])}


@pytest.mark.slow
def test_recommendations_computes_the_users_own_auc_from_the_checkpoint(runs_store, use_store):
    use_store(runs_store)
    rid = run_ids("/em3-s0")[0]
    classes = _test_classes(rid)
    at = open_page("recommendations")
    at.selectbox(key="rec-run").set_value(rid).run()
    users = [o.split(" · ")[0] for o in at.selectbox(key="rec-user").options]   # labels read "<id> · k hits in top-K"
    both = next(u for u in users if min(classes.get(u, (0, 0))) > 0)
    one = next((u for u in users if u in classes and min(classes[u]) == 0), None)
    at.selectbox(key="rec-user").set_value(both).run()
    at.button(key="rec-auc").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.metric[0].label == "User's test AUC"
    assert 0.0 <= float(at.metric[0].value) <= 1.0                  # a number: the user has both classes
    pos, neg = classes[both]
    assert at.metric[0].proto.help == f"{pos} positive and {neg} negative test samples"
    if one is not None:                                              # a one-class user has no AUC, and says so
        at.selectbox(key="rec-user").set_value(one).run()
        at.button(key="rec-auc").click().run()
        assert at.metric[0].value == "n/a (one class only)"


def test_empty_ablations_page_trains_the_demo_grid_as_one_group(fresh_store, fake_registry):
    from app.launch_form import DEMO_GRID
    at = open_page("ablations")
    assert "No ablation groups yet" in texts(at)
    at.button(key="abl-demo-grid").click().run()
    assert not at.exception, [e.value for e in at.exception]
    jobs = fake_registry.jobs()
    assert sorted(j["arm"] for j in jobs) == sorted(DEMO_GRID)
    groups = {j["group"] for j in jobs}
    assert len(groups) == 1 and next(iter(groups)).startswith("demo-grid-")
    assert at.selectbox(key="abl-group").value == jobs[0]["group"]      # the page now follows the new group
    client = MlflowClient(tracking_uri=tracking_uri())
    runs = [client.get_run(fake_registry.wait(j["id"], timeout=60)["run_id"]) for j in jobs]
    assert {r.data.tags["em3.arm"] for r in runs} == set(DEMO_GRID)
    assert {(r.data.tags["em3.dataset"], r.data.tags["em3.ranker"], r.data.tags["em3.group"]) for r in runs} == {
        ("synthetic-demo", "din", jobs[0]["group"])}
    assert {r.data.params["train.seed"] for r in runs} == {"0"}
