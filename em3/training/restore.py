"""Rebuild a logged run's model from its config.json and best checkpoint (for recommend and the dashboard)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from em3.config import Config
from em3.data.schema import SampleSet
from em3.errors import RunError
from em3.models.em3 import build_model
from em3.training import checkpoint
from em3.training.hooks import Hooks
from em3.training.run import load_run_data, logged_config
from em3.training.tracking import download_dir


@dataclass
class RestoredRun:
    run_id: str
    cfg: Config
    samples: SampleSet
    tokens: Any                     # ItemTokens | None
    model: torch.nn.Module          # eval mode, best weights, on CPU


def restore_run(run_id: str, *, device: torch.device = torch.device("cpu")) -> RestoredRun:
    """Config, samples, tokens and the best-checkpoint model of a logged run; RunError naming the run if missing."""
    cfg = logged_config(run_id)
    _, samples, tokens = load_run_data(cfg, hooks=Hooks())
    model = build_model(cfg, samples=samples, tokens=tokens)
    with tempfile.TemporaryDirectory() as d:
        try:
            folder = download_dir(run_id, "checkpoint", Path(d))
        except Exception as e:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise RunError(f"run {run_id}: no checkpoint/ artifact ({type(e).__name__}: {e})") from None
        model.load_state_dict(checkpoint.load_best(folder))
    return RestoredRun(run_id=run_id, cfg=cfg, samples=samples, tokens=tokens, model=model.to(device).eval())


def user_index(samples: SampleSet, user_id: str, *, run_id: str) -> int:
    """The user index of an original user_id given as text; RunError naming the run and user if unknown."""
    matches = [i for i, u in enumerate(samples.user_ids) if str(u) == str(user_id)]
    if not matches:
        examples = ", ".join(str(u) for u in samples.user_ids[:5])
        raise RunError(f"run {run_id}: unknown user {user_id!r} (its dataset has {samples.num_users} users, "
                       f"e.g. {examples})")
    return matches[0]
