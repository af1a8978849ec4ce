"""The live view's polls do little: figures rebuilt only when a series grew, at most every CHART_REFRESH_S."""
from __future__ import annotations

from app.live import CHART_REFRESH_S, chart_figures
from app.jobs import FINISHED, RUNNING


def _job(state: str, n_losses: int, n_epochs: int) -> dict:
    return {"id": "j0001-abcdef", "state": state, "losses": [(10 * i, 0.7 - 0.01 * i) for i in range(n_losses)],
            "epochs": [{"epoch": e + 1, "val/auc": 0.6 + 0.01 * e, "val/gauc": 0.55, "val/logloss": 0.6}
                       for e in range(n_epochs)]}


def _loss_points(fig) -> int:
    return len(fig.data[0].x)


def test_a_running_jobs_charts_take_new_points_at_most_every_chart_refresh():
    cache: dict = {}
    loss, val = chart_figures(_job(RUNNING, 3, 0), cache, now=100.0)
    assert _loss_points(loss) == 3 and val is None            # no validation chart before the first epoch
    again = chart_figures(_job(RUNNING, 5, 0), cache, now=100.0 + CHART_REFRESH_S / 2)
    assert again[0] is loss                                   # the same figure is sent again: no rebuild
    later = chart_figures(_job(RUNNING, 6, 1), cache, now=100.0 + CHART_REFRESH_S + 0.1)
    assert later[0] is not loss and _loss_points(later[0]) == 6
    assert [t.name for t in later[1].data] == ["val/auc", "val/gauc", "val/logloss"]


def test_unchanged_series_are_not_rebuilt_and_the_end_of_a_run_is_drawn_at_once():
    cache: dict = {}
    first = chart_figures(_job(RUNNING, 4, 1), cache, now=0.0)
    assert chart_figures(_job(RUNNING, 4, 1), cache, now=1000.0) is first   # nothing new, however late
    done = chart_figures(_job(FINISHED, 7, 2), cache, now=0.5)              # finished: the whole run, now
    assert done is not first and _loss_points(done[0]) == 7 and len(done[1].data[0].x) == 2


def test_the_progress_line_reads_the_eta_as_an_estimate_to_the_epoch_cap():
    from app.live import progress_line
    job = {"state": RUNNING, "progress": {"phase": "train", "epoch": 2, "epochs": 10, "step": 5, "steps_per_epoch": 71,
                                          "samples_per_s": 4700.0, "eta_s": 100.0, "loss": 0.55}}
    frac, line = progress_line(job)
    assert frac == (1 + 5 / 71) / 10
    assert line == "train · epoch 2/10 · step 5/71 · 4700 samples/s · ≈ 1m40s of training to epoch 10 · loss 0.5500"
    job["progress"]["eta_s"] = float("nan")          # before the first step: no estimate yet
    assert "≈ – of training" in progress_line(job)[1]


def test_a_queued_jobs_first_metric_is_timed_from_its_start_and_its_wait_said_apart():
    from app.live import first_metric_note
    alone = {"submitted": 100.0, "started": 100.2, "first_metric_s": 1.9}
    assert first_metric_note(alone) == " · first live metric after 1.9 s"
    behind = {"submitted": 100.0, "started": 215.3, "first_metric_s": 122.3}     # a grid's second job
    assert first_metric_note(behind) == " · queued 115.3 s · first live metric 7.0 s after it started"
    assert first_metric_note({"submitted": 100.0, "started": None, "first_metric_s": None}) == ""
