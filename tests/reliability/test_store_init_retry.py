"""Opening the default store retries the schema race of two processes on an empty mlruns/.

Session 10 lost a bench shard at start-up: both shards ran MLflow's migrations on a fresh SQLite store and
the second died on "duplicate column name: step". `tracking.client()` now retries that error; an error that
is not transient still reaches the caller at once.
"""
from __future__ import annotations

import sqlite3

import pytest

from em3.training import tracking


def _patch(monkeypatch, fails: int, error: Exception) -> list[str]:
    """MlflowClient replaced by a stand-in whose first `fails` constructions raise `error`; returns the
    tracking URIs it was constructed with, one per call."""
    calls: list[str] = []

    def flaky(tracking_uri: str) -> str:
        calls.append(tracking_uri)
        if len(calls) <= fails:
            raise error
        return tracking_uri

    monkeypatch.setattr(tracking, "MlflowClient", flaky)
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    return calls


def test_client_survives_the_fresh_store_migration_race(monkeypatch):
    calls = _patch(monkeypatch, 2, sqlite3.OperationalError("duplicate column name: step"))
    assert tracking.client() == tracking.paths.tracking_uri()
    assert calls == [tracking.paths.tracking_uri()] * 3


def test_client_does_not_hide_a_real_error(monkeypatch):
    calls = _patch(monkeypatch, 1, sqlite3.OperationalError("unable to open database file"))
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        tracking.client("sqlite:////nowhere/mlflow.db")
    assert calls == ["sqlite:////nowhere/mlflow.db"]
