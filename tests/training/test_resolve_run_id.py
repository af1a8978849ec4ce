"""`--run-id` / `--resume` take the dashboard's short ids: a unique prefix resolves to the whole run id."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from em3 import paths
from em3.errors import RunError
from em3.training.tracking import resolve_run_id


class _Pages:
    """A client stub: two experiments, their runs served two to a page."""

    def __init__(self, ids: list[str]):
        self.ids = ids

    def search_experiments(self):
        return [SimpleNamespace(experiment_id="1"), SimpleNamespace(experiment_id="2")]

    def search_runs(self, exps, max_results, page_token=None):
        start = int(page_token or 0)
        page = [SimpleNamespace(info=SimpleNamespace(run_id=r)) for r in self.ids[start:start + 2]]
        return _Page(page, str(start + 2) if start + 2 < len(self.ids) else None)


class _Page(list):
    def __init__(self, rows, token):
        super().__init__(rows)
        self.token = token


IDS = ["947fed7c" + "0" * 24, "947fed7d" + "1" * 24, "a1b2c3d4" + "2" * 24, "ffff0000" + "3" * 24, "0badc0de" + "4" * 24]


def test_a_unique_prefix_resolves_on_any_page_and_an_ambiguous_or_unknown_one_is_refused():
    c = _Pages(IDS)
    assert resolve_run_id("947fed7c", c) == IDS[0]
    assert resolve_run_id(" 0BADC0 ", c) == IDS[4]                   # the last page; case and spaces forgiven
    assert resolve_run_id("a", c) == IDS[2]
    assert resolve_run_id(IDS[3], c) == IDS[3]
    assert resolve_run_id("e" * 32, c) == "e" * 32                 # a whole id is taken as given, not searched
    with pytest.raises(RunError, match=r"2 runs have ids starting with '947fed7' \(947fed7c0.*947fed7d1.*give more"):
        resolve_run_id("947fed7", c)
    with pytest.raises(RunError, match="no run in .* has an id starting with 'zz'"):
        resolve_run_id("zz", c)
    with pytest.raises(RunError, match="empty"):
        resolve_run_id("  ", c)


def test_a_short_id_of_a_real_store_resolves(fresh_store):
    c = MlflowClient(tracking_uri=paths.tracking_uri())
    rid = c.create_run(c.create_experiment("em3")).info.run_id
    assert resolve_run_id(rid[:8]) == rid
