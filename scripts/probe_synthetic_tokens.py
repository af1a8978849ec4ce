"""Linear probes: how readable are the synthetic generator's hidden attributes in the frozen scratch tokens?

    python scripts/probe_synthetic_tokens.py [--preset demo]

For each modality, the items' mean-pooled tokens (em3.models.content.pooled_features) are probed
with 4-fold cross-validation for each of that modality's attributes (logistic regression, C=0.1,
standardised; accuracy) and for the modality's share of the attribute appeal averaged over all
users (ridge regression; R²): the part of the click logit a content model can carry to a cold item.
Ground truth is read here only; the encoders never see it. docs/RESULTS.md quotes the numbers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sklearn.linear_model import LogisticRegression, RidgeCV  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from em3.config import SYNTHETIC_PRESETS, preset  # noqa: E402
from em3.data.prepare import prepare  # noqa: E402
from em3.models.content import pooled_features  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo", choices=SYNTHETIC_PRESETS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = preset(args.preset)
    data = prepare(cfg)
    tokens, truth = data.tokens, data.raw.ground_truth
    codes, weight = truth["item_attributes"], truth["attribute_weight"]          # (I, A), (A,)
    names, modality = list(truth["attribute_names"]), list(truth["attribute_modality"])
    appeal_by_value = truth["user_tastes"].mean(axis=0)                         # (A, V)
    for m in ("image", "text"):
        x = pooled_features(tokens, modalities=(m,)).numpy()[1:]                # (I, C); row 0 is padding
        attrs = [a for a in range(len(names)) if modality[a] == m]
        appeal = sum(weight[a] * appeal_by_value[a, codes[:, a]] for a in attrs)
        r2 = cross_val_score(RidgeCV(alphas=np.logspace(-3, 3, 13)), x, appeal, cv=4, scoring="r2").mean()
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300))
        accs = {names[a]: cross_val_score(probe, x, codes[:, a], cv=4).mean() for a in attrs}
        print(f"{args.preset} {m}: appeal R² {r2:.2f}; " + ", ".join(f"{k} {v:.2f}" for k, v in accs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
