"""Shared fixtures: an isolated MLflow store and cache per test session, ../shared detection."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = (REPO.parent / "shared").resolve()

# Point the library at the local pretrained copies when ../shared exists (as CI has it).
if SHARED.is_dir():
    os.environ.setdefault("EM3_IMAGE_ENCODER", str(SHARED / "models" / "mobilenet_v2_1.0_224_coral"))
    os.environ.setdefault("EM3_TEXT_ENCODER", str(SHARED / "models" / "all-MiniLM-L6-v2"))
    os.environ.setdefault("EM3_MOVIELENS_DIR", str(SHARED / "data" / "movielens-100k"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# The dashboard builds the demo preset's data at start-up for a new user's first Start; the suite's servers
# train other presets, and that build competed with them for the 2 cores (browser tests 60 s -> 240 s).
os.environ.setdefault("EM3_WARM_DEMO", "0")


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs ../shared/{'/'.join(parts)} (pretrained models and MovieLens live there; absent on a fresh clone)")
    return p


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test runs torch on one thread. Small CPU batches: on a shared 2-core box, two spinning intra-op threads run ~100x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def movielens_dir() -> Path:
    return shared_path("data", "movielens-100k")


@pytest.fixture(autouse=True, scope="session")
def _isolated_store(tmp_path_factory: pytest.TempPathFactory):
    """Every test session writes MLflow runs, caches and bench ledgers into a temp dir, never the repo's."""
    root = tmp_path_factory.mktemp("em3")
    old = {k: os.environ.get(k) for k in ("EM3_MLRUNS_DIR", "MLFLOW_TRACKING_URI", "EM3_CACHE_DIR", "EM3_BENCH_LEDGER")}
    os.environ["EM3_MLRUNS_DIR"] = str(root / "mlruns")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["EM3_CACHE_DIR"] = str(root / "cache")
    os.environ["EM3_BENCH_LEDGER"] = str(root / "ledger")     # the bench ledger under docs/ is committed
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty MLflow store for one test."""
    monkeypatch.setenv("EM3_MLRUNS_DIR", str(tmp_path / "mlruns"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "mlruns"
