"""Opening the default store retries the schema race of two processes on an empty mlruns/.

Session 10 lost a bench shard at start-up: both shards ran MLflow's migrations on a fresh SQLite store and
the second died on "duplicate column name: step". `tracking.client()` now retries that error; an error that
is not transient still reaches the caller at once.
"""
from __future__ import annotations

import sqlite3

import pytest

from em3.training import tracking


class _FlakyClient:
    """Stands in for MlflowClient: the first `fails` constructions raise `error`."""
    calls = 0

    def __init__(self, *, tracking_uri: str, fails: int, error: Exception) -> None:
        type(self).calls += 1
        if type(self).calls <= fails:
            raise error
        self.tracking_uri = tracking_uri


def _patch(monkeypatch, fails: int, error: Exception) -> type:
    cls = type("Flaky", (_FlakyClient,), {"calls": 0})
    monkeypatch.setattr(tracking, "MlflowClient", lambda tracking_uri: cls(tracking_uri=tracking_uri,
                                                                           fails=fails, error=error))
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    return cls


def test_client_survives_the_fresh_store_migration_race(monkeypatch):
    cls = _patch(monkeypatch, 2, sqlite3.OperationalError("duplicate column name: step"))
    c = tracking.client()
    assert cls.calls == 3 and c.tracking_uri == tracking.paths.tracking_uri()


def test_client_does_not_hide_a_real_error(monkeypatch):
    cls = _patch(monkeypatch, 1, sqlite3.OperationalError("unable to open database file"))
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        tracking.client()
    assert cls.calls == 1
