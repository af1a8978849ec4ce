"""Checkpoint files: atomic save, verified load, corrupt files named; the MLflow retry on a locked database."""
from __future__ import annotations

import pytest
import torch

from em3.errors import CacheError
from em3.training import checkpoint
from em3.training.fit import FitState
from em3.training.tracking import retry


def test_resume_state_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    best = {k: v.clone() for k, v in model.state_dict().items()}
    state = FitState(epoch=2, global_step=17, best_auc=0.75, best_epoch=2, bad_epochs=0, train_seconds=1.5,
                     samples_seen=300, best_weights=best)
    checkpoint.save_resume(tmp_path, model_state=model.state_dict(), optimizer_state=opt.state_dict(), state=state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "best.pt.json", "last.pt", "last.pt.json"]
    expected_rng = torch.get_rng_state()
    torch.rand(5)                                              # move the RNG on; loading must restore it
    weights, opt_state, loaded = checkpoint.load_resume(tmp_path)
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert (loaded.epoch, loaded.global_step, loaded.best_auc, loaded.samples_seen) == (2, 17, 0.75, 300)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert opt_state["state"][0]["step"] == 1
    assert all(torch.equal(checkpoint.load_best(tmp_path)[k], v) for k, v in best.items())


def test_no_best_file_when_the_epoch_was_not_the_best(tmp_path):
    state = FitState(epoch=3, best_epoch=2, best_weights={"w": torch.zeros(1)})
    checkpoint.save_resume(tmp_path, model_state={"w": torch.ones(1)}, optimizer_state={}, state=state)
    assert not (tmp_path / "best.pt").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar"])
def test_corrupt_checkpoint_raises_cache_error_naming_the_path(tmp_path, damage):
    path = checkpoint.save({"w": torch.arange(100.0)}, tmp_path / "x.pt")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    else:
        (tmp_path / "x.pt.json").unlink()
    with pytest.raises(CacheError, match=str(tmp_path)):
        checkpoint.load(path)


def test_checkpoint_never_unpickles_code(tmp_path):
    path = checkpoint.save({"obj": FitState()}, tmp_path / "evil.pt")    # a pickled class, not tensors
    with pytest.raises(CacheError, match="could not be read"):
        checkpoint.load(path)


def test_retry_backs_off_on_a_locked_database():
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert retry(flaky, delay=0.001) == "ok" and calls["n"] == 3
    with pytest.raises(ValueError):
        retry(lambda: (_ for _ in ()).throw(ValueError("other")), delay=0.001)


@pytest.mark.parametrize("message", ["(sqlite3.OperationalError) duplicate column name: step",
                                     "(sqlite3.OperationalError) table experiments already exists"])
def test_retry_rides_out_two_processes_creating_a_fresh_store(message):
    """Two bench shards started on an empty store raced in MLflow's schema migration (session 5)."""
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError(message)
        return "ok"

    assert retry(flaky, delay=0.001) == "ok" and calls["n"] == 2


def test_retry_does_not_wait_on_an_experiment_that_already_exists():
    calls = {"n": 0}

    def exists():
        calls["n"] += 1
        raise RuntimeError("Experiment(name=em3) already exists. Error: (raised by another process)")

    with pytest.raises(RuntimeError, match="already exists"):
        retry(exists, delay=0.001)
    assert calls["n"] == 1
