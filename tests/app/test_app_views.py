"""The dashboard's pure view functions (em3/evaluation/views_*.py) against hand-computed values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from app.launch_form import base_config, build_config, check_dataset_dir, knob_defaults
from em3.config import ConfigError, preset
from em3.evaluation.views_alignment import (cold_rows, link_segments, match_rate, mean_pairwise_cosine,
                                            pair_cosines, project, project_pairs, shared_projection,
                                            shared_space)
from em3.evaluation.views_attention import (item_labels, normalise, overlay, query_weights, ranker_weights,
                                            segments_of, shaded_tokens_html, split_segments, view_of)
from em3.evaluation.views_reference import references_for
from em3.evaluation.views_tables import (arm_summary, efficiency_column, format_summary, group_summary, param_diff,
                                         time_parts)


def test_group_summary_mean_std_and_delta_against_em3():
    runs = pd.DataFrame({"arm": ["em3", "em3", "id_only", "id_only"],
                         "test/auc": [0.70, 0.72, 0.60, 0.64], "test/gauc": [0.6, 0.6, 0.5, np.nan]})
    s = group_summary(runs, metrics=("test/auc", "test/gauc"))
    assert s.loc["em3", "n"] == 2
    assert s.loc["em3", "test/auc mean"] == pytest.approx(0.71)
    assert s.loc["em3", "test/auc std"] == pytest.approx(np.std([0.70, 0.72], ddof=1))
    assert s.loc["id_only", "test/auc Δ"] == pytest.approx(0.62 - 0.71)
    assert s.loc["em3", "test/auc Δ"] == 0.0
    assert np.isnan(s.loc["id_only", "test/gauc std"])          # one value: no std
    f = format_summary(s, metrics=("test/auc",))
    assert f.loc["em3", "test/auc"] == "0.7100 ± 0.0141" and f.loc["id_only", "Δ test/auc"] == "-0.0900"


def test_group_summary_without_baseline_has_nan_delta():
    s = group_summary(pd.DataFrame({"arm": ["a"], "test/auc": [0.5]}), metrics=("test/auc",))
    assert np.isnan(s.loc["a", "test/auc Δ"])


def test_param_diff_keeps_only_differing_parameters():
    d = param_diff({"r1": {"lr": "0.1", "seed": "0"}, "r2": {"lr": "0.1", "seed": "1", "extra": "x"}})
    assert list(d.index) == ["extra", "seed"] and d.loc["seed", "r2"] == "1" and d.loc["extra", "r1"] == ""


def test_project_pairs_shapes_and_identical_pairs_coincide():
    x = np.random.default_rng(0).normal(size=(20, 8))
    c, e = project_pairs(x, x.copy(), method="pca")
    assert c.shape == e.shape == (20, 2)
    np.testing.assert_allclose(c, e, atol=1e-9)            # same vectors → same points in the shared projection
    c2, e2 = project_pairs(x, np.random.default_rng(1).normal(size=(20, 8)), method="tsne")
    assert c2.shape == e2.shape == (20, 2) and np.isfinite(c2).all()


def test_project_pairs_refuses_tables_that_are_not_in_one_space():
    x = np.random.default_rng(0).normal(size=(20, 8))
    with pytest.raises(ValueError, match="not in one space"):
        project_pairs(x, np.random.default_rng(1).normal(size=(20, 4)))     # raw content D vs raw id_dim


def test_shared_projection_is_one_fit_on_the_union():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(15, 6)) * 0.1 + np.r_[1.0, 0, 0, 0, 0, 0]             # two clusters, far apart
    b = rng.normal(size=(5, 6)) * 0.1 - np.r_[1.0, 0, 0, 0, 0, 0]
    axy, bxy = shared_projection(a, b)
    assert axy.shape == (15, 2) and bxy.shape == (5, 2)
    assert np.sign(axy[:, 0]).min() == np.sign(axy[:, 0]).max() != np.sign(bxy[:, 0]).max()   # one axis splits them
    assert project(a).shape == (15, 2)                                          # one table on its own


def test_shared_space_and_cold_rows_of_an_export():
    emb = {"item_index": np.arange(4), "content": np.ones((4, 3)), "id": np.ones((4, 2)),
           "id_row": np.array([0, 1, 2, 1])}
    assert shared_space(emb) is None                                         # no CIC heads: no shared space
    np.testing.assert_array_equal(cold_rows(emb), [False, True, False, True])
    aligned = {**emb, "content_aligned": np.eye(4)[:, :3], "id_aligned": np.eye(4)[:, :3]}
    c, e = shared_space(aligned)
    assert c.shape == e.shape == (4, 3)
    older = {"id": np.array([[0.0, 0.0], [0.5, 0.1], [0.2, 0.3], [0.5, 0.1]])}   # rows 1 and 3 share the unknown ID
    np.testing.assert_array_equal(cold_rows(older), [False, True, False, True])


def test_match_rate_and_mean_pairwise_cosine():
    x = np.eye(4)
    assert match_rate(x, x) == 1.0
    assert match_rate(x, np.roll(x, 1, axis=0)) == 0.0                      # every item's nearest ID is another's
    assert mean_pairwise_cosine(np.ones((3, 2))) == pytest.approx(1.0)        # a collapsed side
    assert mean_pairwise_cosine(x) == pytest.approx(0.0)


def test_link_segments_are_nan_separated():
    xs, ys = link_segments(np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[4.0, 5.0], [6.0, 7.0]]))
    np.testing.assert_array_equal(xs[:2], [0, 4])
    assert np.isnan(xs[2]) and ys[4] == 7.0


def test_pair_cosines_matched_vs_random():
    x = np.eye(4)
    matched, rand = pair_cosines(x, x)
    np.testing.assert_allclose(matched, 1.0)
    np.testing.assert_allclose(rand, 0.0)                   # a random *other* item is orthogonal here
    with pytest.raises(ValueError, match="same width"):
        pair_cosines(np.ones((3, 2)), np.ones((3, 4)))


def test_attention_splits_by_modality_segment_and_head_mean():
    att = np.zeros((1, 1, 2, 1, 6))                          # (n, layers, heads, Nq, T): image 4 (2x2), tabular 2
    att[0, 0, 0, 0] = [0.4, 0.1, 0.1, 0.1, 0.2, 0.1]
    att[0, 0, 1, 0] = [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]
    npz = {"attention": att, "modalities": np.array(["image", "tabular"]), "sizes": np.array([4, 2]), "Ti": 4}
    segments = segments_of(npz)
    assert segments == [("image", 4), ("tabular", 2)]
    parts = split_segments(query_weights(att, row=0, layer=0, head=0, query=0), segments)
    np.testing.assert_allclose(parts["image"], [0.4, 0.1, 0.1, 0.1])
    np.testing.assert_allclose(parts["tabular"], [0.2, 0.1])
    mean = split_segments(query_weights(att, row=0, layer=0, head=None, query=0), segments)
    assert mean["image"][0] == pytest.approx(0.2) and mean["tabular"][0] == pytest.approx(0.35)
    with pytest.raises(ValueError, match="cover 5 columns"):
        split_segments(parts["image"].tolist() + [0.0, 0.0], [("image", 4), ("tabular", 1)])
    # an export from before the registry: Ti image columns, then text
    assert segments_of({"attention": att, "Ti": np.asarray(4)}) == [("image", 4), ("text", 2)]
    assert segments_of({"attention": att, "Ti": np.asarray(0)}) == [("text", 6)]
    assert [view_of(m) for m in ("image", "text", "tabular", "audio", "smell")] == ["grid", "tokens", "bars",
                                                                                   "bars", "bars"]


def test_overlay_reddens_the_attended_corner_and_tokens_are_escaped():
    img = Image.new("RGB", (40, 40), (0, 0, 255))
    out = np.asarray(overlay(img, np.array([[1.0, 0.0], [0.0, 0.0]]), width=40))
    assert out[2, 2, 0] > 100 and out[37, 37, 0] < 20
    np.testing.assert_allclose(normalise(np.array([0.0, 2.0])), [0.0, 1.0])
    html = shaded_tokens_html(["<b>", "ok"], np.array([1.0, 0.5]))
    assert "&lt;b&gt;" in html and "rgba(230,60,30,1.00)" in html and "rgba(230,60,30,0.50)" in html


def test_references_only_for_matching_metric_and_kind():
    assert {r.value for r in references_for("test/recall_at_20", "topk")} >= {0.1032, 0.1099}
    assert references_for("test/recall_at_20", "ctr") == []
    assert references_for("test/auc", "ctr") == []        # leaderboard AUCs: other datasets and protocols


def test_launch_form_builds_configs_and_checks_paths(tmp_path):
    base = base_config("tiny", "em3_no_cic")
    cfg = build_config("tiny", "em3_no_cic", ranker="dcnv2", knobs={**knob_defaults(base), "train.epochs": 1})
    assert cfg.model.arm == "em3_no_cic" and cfg.model.cic.weight == 0.0 and cfg.model.ranker.kind == "dcnv2"
    assert cfg.train.epochs == 1 and cfg.data.preset == "tiny"
    with pytest.raises(ConfigError, match="model.fusion.dim"):
        build_config("tiny", "em3", ranker="din", knobs={"model.fusion.dim": 30})
    (tmp_path / "items.csv").write_text("item_id,title,text\n")
    with pytest.raises(ConfigError, match="lacks interactions.csv or interactions.parquet"):
        check_dataset_dir(str(tmp_path), "files")
    (tmp_path / "interactions.parquet").write_bytes(b"")
    assert check_dataset_dir(str(tmp_path), "files") == tmp_path.resolve()
    with pytest.raises(ConfigError, match="not a directory"):
        check_dataset_dir(str(tmp_path / "items.csv"), "files")


def test_efficiency_column_formats_what_the_run_logged_and_says_what_it_did_not():
    metrics = {"params/trainable": 12345.0, "params/total": 1234567.0, "params/history_trainable": 2048.0,
               "time/train_seconds_per_epoch": 12.3456, "time/val_seconds_per_epoch": 0.5,
               "perf/samples_per_s": 8421.7, "perf/peak_memory_mb": 1536.25}
    col = efficiency_column(metrics, {"em3.device": "cuda (NVIDIA H200)", "em3.memory_kind": "CUDA allocator peak"})
    assert col == {"Trainable parameters": "12,345 (1.0% of 1,234,567)", "Total parameters": "1,234,567",
                   "History-path trainable parameters": "2,048", "Train seconds / epoch": "12.35 s",
                   "Validation seconds / epoch": "0.50 s", "Training samples / s": "8,422",
                   "Peak memory": "1,536.2 MiB (CUDA allocator peak)", "Device": "cuda (NVIDIA H200)"}
    older = efficiency_column({"params/trainable": 10.0, "perf/peak_memory_mb": 99.0}, {})
    assert older["Trainable parameters"] == "10" and older["Total parameters"] == "not logged"
    assert older["Train seconds / epoch"] == older["Device"] == "not logged"
    assert older["Peak memory"] == "99.0 MiB (kind not logged)"


def test_time_parts_are_the_logged_timers_in_the_order_they_are_spent():
    metrics = {"time/explain_seconds": 1.5, "time/train_seconds": 60.0, "time/topk_seconds": 3.5,
               "time/val_seconds": 2.0, "time/train_seconds_per_epoch": 10.0}
    assert time_parts(metrics) == {"training": 60.0, "validation": 2.0, "top-K ranking": 3.5, "explain artifacts": 1.5}
    assert list(time_parts(metrics)) == ["training", "validation", "top-K ranking", "explain artifacts"]
    assert time_parts({"test/auc": 0.7}) == {}


def test_token_labels_are_looked_up_by_item_never_by_row():
    labels = {"text": {"1": ["first"], "7": ["seventh"]}, "tabular": {"7": ["year=1995"]}}
    assert item_labels(labels, "text", 7) == ["seventh"]
    assert item_labels(labels, "text", 2) is None      # not labels["1"] (row 1's key): item 2 has none exported
    assert item_labels(labels, "tabular", 7) == ["year=1995"] and item_labels(labels, "audio", 7) is None


def test_ranker_weights_are_labelled_by_what_they_are():
    w, wc = np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]])
    both = ranker_weights({"weights": w, "content_weights": wc, "weights_kind": np.asarray("id")})
    assert [label for label, _ in both] == ["ID attention", "content attention"]
    np.testing.assert_array_equal(both[1][1], wc)
    assert [label for label, _ in ranker_weights({"weights": w, "weights_kind": np.asarray("id")})] == ["ID attention"]
    (older,) = ranker_weights({"weights": w})           # exports before the split: DIN's mean for content runs
    assert older[0] == "attention (older export: for a content run, the mean of ID and content attention)"


def test_arm_summary_splits_rankers_and_keeps_custom_runs_apart():
    runs = pd.DataFrame({"arm_label": ["em3", "em3", "custom (from em3)", "em3", "id_only"],
                         "ranker": ["din", "din", "din", "dcnv2", "dcnv2"],
                         "test/auc": [0.70, 0.72, 0.50, 0.66, 0.60]})
    s = arm_summary(runs, metrics=("test/auc",))
    assert list(s.index) == ["custom (from em3) · din", "em3 · din", "em3 · dcnv2", "id_only · dcnv2"]
    assert s.loc["em3 · din", "n"] == 2 and s.loc["em3 · din", "test/auc mean"] == pytest.approx(0.71)
    assert s.loc["id_only · dcnv2", "test/auc Δ"] == pytest.approx(0.60 - 0.66)   # against em3 of its own ranker
    assert s.loc["custom (from em3) · din", "test/auc Δ"] == pytest.approx(0.50 - 0.71)
    one = arm_summary(runs[runs["ranker"] == "din"], metrics=("test/auc",))
    assert list(one.index) == ["custom (from em3)", "em3"]                          # one ranker: arms alone


def test_alignment_sample_keeps_warm_items_when_the_split_drew_its_cold_items_with_the_same_seed():
    from em3.data.samples import draw_cold_items, draw_val_cold_items
    from em3.evaluation.views_alignment import sample_rows
    item_index = np.arange(3001)                                     # row 0 padding, items 1..3000
    cold = np.zeros(3001, bool)
    test_cold = draw_cold_items(3000, 0.1, seed=0)                   # the demo's split: 300 test-cold, 300 val-cold
    cold[test_cold] = cold[draw_val_cold_items(3000, 0.1, test_cold, seed=0)] = True
    plain = np.random.default_rng(0).choice(np.arange(1, 3001), size=300, replace=False)
    assert cold[plain].all()                                         # the old draw: all 300 cold, nothing to compare
    rows = sample_rows(item_index, cold, size=300, seed=0)
    assert len(rows) == len(set(rows)) == 300 and 0 not in rows
    assert (~cold[rows]).sum() == 240 and cold[rows].sum() == 60     # the catalogue's 80 / 20
    assert list(sample_rows(item_index[:5], cold[:5], size=300)) == [1, 2, 3, 4]   # fewer items than asked: all


def _colour_data(attribute_columns, attrs):
    from types import SimpleNamespace

    from app.run_data import RunData
    return RunData(raw=SimpleNamespace(attribute_columns=attribute_columns), samples=SimpleNamespace(item_attributes=attrs))


def test_alignment_colours_by_movielens_primary_genre_first_and_names_the_flags():
    """MovieLens's loader gives 19 genre flags plus the primary 'genre' (em3/data/movielens.py). The page once
    offered the flags one by one, genre_unknown first: 0.0 for nearly every item, one colour on the plot."""
    from app.run_data import attribute_colours, colour_columns
    attrs = pd.DataFrame({"title": [None, "a", "b", "c"], "genre_unknown": [np.nan, 0.0, 0.0, 1.0],
                          "Action": [np.nan, 1.0, 0.0, 0.0], "genre": [None, "Action", "Comedy", "unknown"]},
                         index=[0, 1, 2, 3])
    data = _colour_data(("genre_unknown", "Action", "genre"), attrs)
    assert colour_columns(data) == ["genre", "genre_unknown", "Action"]
    idx = np.array([1, 2, 3, 0])
    assert attribute_colours(data, idx, "genre") == ["Action", "Comedy", "unknown", "none"]
    assert attribute_colours(data, idx, "Action") == ["Action", "not Action", "not Action", "none"]
    # flags alone (no primary-genre column): one 'genre' choice, the first flag set
    flags_only = _colour_data(("genre_unknown", "Action"), attrs.drop(columns="genre"))
    assert colour_columns(flags_only) == ["genre", "genre_unknown", "Action"]
    assert attribute_colours(flags_only, idx, "genre") == ["Action", "none", "genre_unknown", "none"]
    # categorical attributes (the synthetic data) are offered as they are
    cats = _colour_data(("shape", "mood"), pd.DataFrame({"shape": ["x", "y"], "mood": ["m", "n"]}, index=[1, 2]))
    assert colour_columns(cats) == ["shape", "mood"]
    assert attribute_colours(cats, np.array([2, 1]), "shape") == ["y", "x"]


def test_a_finished_runs_final_evaluation_is_a_star_beside_the_curve_not_a_last_epoch():
    """run.py logs the best model's final val/* at the last epoch's step: the curve must not end on a vertical jump."""
    from app.widgets import curves, split_final
    logged = pd.DataFrame({"step": [1, 2, 3, 3], "value": [0.70, 0.74, 0.73, 0.74], "timestamp": [1, 2, 3, 4]})
    line, final = split_final(logged)
    assert list(line["step"]) == [1, 2, 3] and list(line["value"]) == [0.70, 0.74, 0.73]
    assert list(final["value"]) == [0.74]
    fig = curves([("run a", logged), ("run b", logged.iloc[:3])], title="val/auc", x_title="epoch")
    names = [t.name for t in fig.data]
    assert names == ["run a", "run a: final (best model)", "run b"]
    assert list(fig.data[0].y) == [0.70, 0.74, 0.73] and list(fig.data[1].y) == [0.74]
    assert fig.data[1].marker.color == fig.data[0].line.color != fig.data[2].line.color
    assert fig.layout.xaxis.title.text == "epoch"
    # a per-step series (train/loss) has no repeated step: all of it is the line
    steps = pd.DataFrame({"step": [1, 2, 3], "value": [0.9, 0.8, 0.7]})
    assert split_final(steps)[1].empty and len(split_final(steps)[0]) == 3
    # placed at the run's best epoch, whose model the final evaluation scored
    placed = curves([("run a", logged)], title="val/auc", final_x={"run a": 2})
    assert list(placed.data[1].x) == [2]


def test_smoothing_is_tensorboards_debiased_ema_over_a_faint_raw_trace():
    from app.widgets import curves, ema_smooth
    values = [1.0, 0.0, float("nan"), 1.0]
    # by hand: ema 0.5·0 + 0.5·1 = 0.5 → /(1-0.5) = 1; 0.25 → /0.75 = 1/3; nan kept; 0.625 → /0.875 = 5/7
    np.testing.assert_allclose(ema_smooth(values, 0.5), [1.0, 1 / 3, np.nan, 5 / 7])
    np.testing.assert_array_equal(ema_smooth(values, 0.0), values)
    with pytest.raises(ValueError, match="in \\[0, 1\\), got 1.0"):
        ema_smooth(values, 1.0)
    steps = pd.DataFrame({"step": [10, 20, 30], "value": [0.9, 0.5, 0.7]})
    fig = curves([("run a", steps)], title="train/loss", smoothing=0.5)
    raw, smooth = fig.data
    assert list(raw.y) == [0.9, 0.5, 0.7] and not raw.showlegend and raw.opacity < 1
    np.testing.assert_allclose(smooth.y, ema_smooth([0.9, 0.5, 0.7], 0.5))
    assert smooth.name == "run a" and smooth.line.color == raw.line.color
    assert [t.name for t in curves([("run a", steps)], title="train/loss").data] == ["run a"]   # off: one trace


def test_final_metrics_read_as_counts_figures_and_four_decimals():
    from em3.evaluation.views_tables import metric_text
    assert [metric_text(v) for v in (409603.0, 4.0, 2580.3086, 0.78954, 0.5, float("nan"), 0.0)] == \
        ["409,603", "4", "2,580.3", "0.7895", "0.5000", "—", "0.0000"]


def test_even_shares_count_the_real_tokens_not_the_weights_above_zero():
    """A modality's raw share grows with its token count: the page reads it against an even spread over the
    item's real tokens. A peaked query's float16 export reads 0 on real tokens too, so the mask decides."""
    from em3.evaluation.views_attention import even_shares, token_mask_of
    parts = {"image": np.array([0.9, 0.0, 0.0]), "text": np.array([0.05, 0.05, 0.0, 0.0])}
    masks = {"image": np.array([True, True, True]), "text": np.array([True, True, False, False])}
    counts, even = even_shares(parts, masks)
    assert counts == {"image": 3, "text": 2} and even == pytest.approx({"image": 0.6, "text": 0.4})
    # an older export without token_mask: text real as far as its labels go, an image whole where weighed
    att = {"attention": np.zeros((2, 1, 2, 1, 5)), "items": np.array([7, 9]),
           "modalities": np.array(["image", "text"]), "sizes": np.array([2, 3])}
    att["attention"][0, 0, 0, 0] = [1.0, 0.0, 0.0, 0.0, 0.0]          # item 7: image token 1 underflowed
    att["attention"][1, 0, 1, 0] = [0.0, 0.0, 0.6, 0.4, 0.0]          # item 9: no image
    labels = {"text": {"7": ["[CLS]", "[SEP]"], "9": ["[CLS]", "a", "[SEP]"]}}
    assert token_mask_of(att, labels).tolist() == [[True, True, True, True, False],
                                                   [False, False, True, True, True]]
    assert token_mask_of({**att, "token_mask": np.ones((2, 5), bool)}).all()


def test_evenness_is_one_for_uniform_attention_and_falls_as_it_concentrates():
    from em3.evaluation.metrics import evenness
    assert evenness(np.array([0.25, 0.25, 0.25, 0.25, 0.0])) == pytest.approx(1.0)   # padding left out
    assert evenness(np.array([0.97, 0.01, 0.01, 0.01])) < 0.2
    assert 0.2 < evenness(np.array([0.5, 0.3, 0.2])) < 1.0
    assert np.isnan(evenness(np.array([1.0, 0.0])))
    # with the mask, a real token whose weight underflowed to 0 still counts: [0.5, 0.5, 0] over 3 real tokens
    assert evenness(np.array([0.5, 0.5, 0.0]), np.array([True, True, True])) == pytest.approx(np.log(2) / np.log(3))
    assert evenness(np.array([0.5, 0.5, 0.0]), np.array([True, True, False])) == pytest.approx(1.0)


def test_modality_lift_reads_each_head_and_query_against_an_even_spread():
    from em3.evaluation.views_attention import modality_lift
    segments = [("image", 2), ("text", 3)]
    att = np.zeros((2, 1, 2, 1, 5))                               # (items, layers, heads, Nq, T)
    mask = np.array([[True] * 5, [False, False, True, True, True]])   # item 1 has no image
    att[0, 0, 0, 0] = [0.2] * 5                                   # head 0: even over the real tokens
    att[1, 0, 0, 0] = [0, 0, 1 / 3, 1 / 3, 1 / 3]
    att[0, 0, 1, 0] = [0.45, 0.45, 0.1, 0.0, 0.0]                 # head 1: favours the image; two real text
    att[1, 0, 1, 0] = [0.0, 0.0, 0.5, 0.5, 0.0]                   # tokens read 0 (underflow), still real
    lift = modality_lift(att, segments, layer=0, mask=mask)
    assert lift.shape == (2, 1, 2)
    np.testing.assert_allclose(lift[0, 0], [1.0, 1.0])
    # item 0: image 0.9 against 2/5 even -> 2.25, text 0.1 against 3/5 -> 1/6; item 1: no image, text 1 -> 1
    np.testing.assert_allclose(lift[1, 0], [2.25, (1 / 6 + 1.0) / 2])
    with pytest.raises(ValueError, match="cover 4 columns"):
        modality_lift(att, [("image", 2), ("text", 2)], layer=0, mask=mask)
