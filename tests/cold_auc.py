"""Train one config on prepared data through the library's own path and score it on test_cold (signal tests)."""
from __future__ import annotations

import torch

from em3.config import Config
from em3.evaluation.evaluate import evaluate_splits
from em3.models.em3 import build_model
from em3.training.fit import fit


def test_cold_auc(cfg: Config, samples, tokens) -> float:
    """build_model -> fit -> evaluate_splits('test_cold') on CPU with one thread (small batches on a shared
    2-core box: one thread is fastest); tokens are ignored by an arm without content."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg, samples=samples, tokens=tokens if cfg.model.use_content else None)
        fit(model, samples, cfg, device=torch.device("cpu"))
        metrics = evaluate_splits(model, samples, batch_size=cfg.train.eval_batch_size, device=torch.device("cpu"),
                                  splits=("test_cold",))
    finally:
        torch.set_num_threads(before)
    return metrics["test_cold/auc"]


test_cold_auc.__test__ = False   # a helper, not a test pytest should collect
