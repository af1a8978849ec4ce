"""Where things live: the repo root, the MLflow store, caches, and the env-var overrides."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_IMAGE_ENCODER = "google/mobilenet_v2_1.0_224"
DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def _abs(path: str) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (Path.cwd() / p).resolve())


def resolve_image_encoder(name: str) -> str:
    """The configured image encoder; the public default yields to $EM3_IMAGE_ENCODER."""
    env = os.environ.get("EM3_IMAGE_ENCODER", "")
    return _abs(env) if name == DEFAULT_IMAGE_ENCODER and env else name


def resolve_text_encoder(name: str) -> str:
    """The configured text encoder; the public default yields to $EM3_TEXT_ENCODER."""
    env = os.environ.get("EM3_TEXT_ENCODER", "")
    return _abs(env) if name == DEFAULT_TEXT_ENCODER and env else name


def resolve_movielens_dir(data_dir: str) -> str:
    """The MovieLens directory: the config's, else $EM3_MOVIELENS_DIR, else ''."""
    if data_dir:
        return _abs(data_dir)
    env = os.environ.get("EM3_MOVIELENS_DIR", "")
    return _abs(env) if env else ""


def cache_dir(configured: str = "") -> Path:
    """Feature cache root: the config's, else $EM3_CACHE_DIR, else <repo>/.cache/features."""
    root = configured or os.environ.get("EM3_CACHE_DIR", "") or str(REPO_ROOT / ".cache" / "features")
    return Path(_abs(root))


def mlruns_dir() -> Path:
    """Artifact root of the default MLflow store ($EM3_MLRUNS_DIR overrides, for tests)."""
    return Path(_abs(os.environ.get("EM3_MLRUNS_DIR", "") or str(REPO_ROOT / "mlruns")))


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else sqlite:///<mlruns>/mlflow.db (MLflow 3 refuses a plain file store)."""
    return os.environ.get("MLFLOW_TRACKING_URI", "") or f"sqlite:///{mlruns_dir() / 'mlflow.db'}"
