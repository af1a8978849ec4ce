"""em3.arms: a config is its arm only while the arm-defining knobs say what the arm means; otherwise custom."""
from __future__ import annotations

import pytest

from em3.arms import arm_conflicts, arm_label, arm_of, arm_tags
from em3.config import ARMS, preset, with_overrides


@pytest.mark.parametrize("arm", list(ARMS))
def test_every_arm_as_defined_is_itself(arm):
    cfg = preset("demo", arm)
    assert arm_of(cfg) == arm and arm_conflicts(cfg) == []
    assert arm_tags(cfg) == {"em3.arm": arm}


@pytest.mark.parametrize("arm, key, value", [
    ("em3", "model.history.strategy", "shared"),           # the em3_shared_history arm's knob
    ("em3", "model.cic.weight", 0.0),                       # CIC off: what em3_no_cic means
    ("em3_no_cic", "model.cic.weight", 0.01),               # CIC back on
    ("em3_frozen_history", "model.history.strategy", "lora"),
    ("em3", "model.fusion.mode", "mean"),
    ("em3_image_only", "model.fusion.modalities", ("image", "text")),
    ("id_only", "model.use_content", True),
    ("precomputed", "model.history.strategy", "frozen"),
])
def test_an_arm_defining_knob_against_the_arm_makes_it_custom(arm, key, value):
    cfg = with_overrides(preset("tiny", arm), {key: value})
    assert arm_of(cfg) == "custom"
    assert arm_tags(cfg) == {"em3.arm": "custom", "em3.base_arm": arm}
    (conflict,) = arm_conflicts(cfg)
    assert conflict.startswith(f"{key} = ") and f"arm {arm} means" in conflict


@pytest.mark.parametrize("arm, overrides", [
    ("em3", {"model.cic.weight": 0.01}),                    # another λ > 0 is still CIC on
    ("em3", {"model.fusion.mode": "blip2"}),                # another Q-Former is still learnable queries
    ("em3", {"model.fusion.modalities": ("text", "image")}),   # the same modalities in another order
    ("em3", {"model.fusion.num_queries": 8, "train.epochs": 1, "model.history.lora_rank": 2}),   # not arm-defining
    ("id_only", {"model.history.strategy": "shared", "model.cic.weight": 0.5}),   # inert without content
])
def test_other_knobs_keep_the_arm(arm, overrides):
    assert arm_of(with_overrides(preset("tiny", arm), overrides)) == arm


def test_arm_label_names_the_base_of_a_custom_run():
    assert arm_label("custom", "em3") == "custom (from em3)"
    assert arm_label("custom", "") == "custom"
    assert arm_label("em3_no_cic", "") == "em3_no_cic"
