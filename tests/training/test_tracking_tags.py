"""RunTracker.start tags a run with what its config is: its arm, or custom (+ em3.base_arm) when it contradicts it."""
from __future__ import annotations

from mlflow import MlflowClient

from em3 import paths
from em3.config import preset, with_overrides
from em3.training.tracking import RunTracker


def _tags(cfg, **kw) -> dict[str, str]:
    tracker = RunTracker.start(cfg, **kw)
    tracker.finish("FINISHED")
    return MlflowClient(tracking_uri=paths.tracking_uri()).get_run(tracker.run_id).data.tags


def test_a_config_that_contradicts_its_arm_is_tagged_custom_with_its_base_arm():
    tags = _tags(with_overrides(preset("tiny", "em3"), {"model.history.strategy": "shared"}))
    assert tags["em3.arm"] == "custom" and tags["em3.base_arm"] == "em3"


def test_an_arm_as_defined_keeps_its_name_and_has_no_base_arm():
    tags = _tags(with_overrides(preset("tiny", "em3_no_cic"), {"train.epochs": 1}), tags={"em3.group": "g"})
    assert tags["em3.arm"] == "em3_no_cic" and "em3.base_arm" not in tags and tags["em3.group"] == "g"
