"""Published reference numbers the dashboard may draw as reference lines, each with its protocol.

From ../shared/docs/EM3_NOTES.md. A number only applies where both the metric and the protocol
match: the Amazon numbers are full-ranking top-K metrics (MMRec split) — they fit `em3.kind=topk`
runs' recall@K / ndcg@K, but on a different dataset, so they are context, not a target. The
CTR AUCs are DIN leaderboard numbers on other datasets; no MovieLens-100K number is published
for our protocol (per-user chronological 80/10/10, rating >= 4), so CTR runs get none by default.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    metric: str          # MLflow metric key it compares to, e.g. "test/recall_at_20" (MLflow rejects "@")
    value: float
    model: str
    dataset: str
    kind: str            # em3.kind it applies to: "topk" or "ctr"
    protocol: str        # how the number was measured
    drawn: bool = True   # False: listed for context only (protocol differs from any run we log)

    @property
    def label(self) -> str:
        return f"{self.model} on {self.dataset} ({self.protocol}): {self.value:.4f}"


_MMREC = "Amazon, MMRec split, full ranking, test; different dataset"
_BARS = "BARS CTR leaderboard, DIN; different dataset"

REFERENCES: tuple[Reference, ...] = tuple(
    Reference(f"test/{m}_at_{k}", v, model, ds, "topk", _MMREC)
    for ds, model, r10, r20, n10, n20 in (
        ("Baby", "VBPR", 0.0423, 0.0663, 0.0223, 0.0285),
        ("Baby", "LATTICE", 0.0551, 0.0852, 0.0292, 0.0369),
        ("Baby", "FREEDOM", 0.0624, 0.0985, 0.0324, 0.0416),
        ("Baby", "EM3", 0.0646, 0.1032, 0.0336, 0.0435),
        ("Sports", "FREEDOM", 0.0713, 0.1075, 0.0384, 0.0477),
        ("Sports", "EM3", 0.0726, 0.1099, 0.0391, 0.0488),
    )
    for m, k, v in (("recall", 10, r10), ("recall", 20, r20), ("ndcg", 10, n10), ("ndcg", 20, n20))
) + (
    Reference("test/auc", 0.8860, "DIN", "Amazon Electronics", "ctr", _BARS, drawn=False),
    Reference("test/auc", 0.7360, "DIN", "MicroVideo1.7M (frozen image emb., new-item test)", "ctr", _BARS, drawn=False),
    Reference("test/auc", 0.7495, "DIN", "KuaiVideo", "ctr", _BARS, drawn=False),
)


def references_for(metric: str, kind: str) -> list[Reference]:
    """References to draw for a metric of runs of this em3.kind (metric and protocol match)."""
    return [r for r in REFERENCES if r.drawn and r.metric == metric and r.kind == kind]
