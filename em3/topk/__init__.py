"""Top-K recommendation on a graph backbone: EM3 on FREEDOM vs VBPR, LightGCN and FREEDOM, MMRec protocol.

`config` (TopKConfig), `data` (TopKData from a SampleSet), `mmrec` (the public-format loader),
`graphs`, `models/`, `metrics` (full ranking), `sampling`, `train` (the BPR loop), `tracking`
(MLflow), `results` (the RESULTS.md table), `bench` (`python -m em3 bench topk`).
"""
