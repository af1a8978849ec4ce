"""Whether a config is what its named arm means: the arm's name, or "custom" when an arm-defining knob contradicts it.

An arm (`em3.config.ARMS`) is a set of overrides; the keys any arm overrides are the
arm-defining knobs. A config keeps its arm's name while each such knob *means* what the arm
says — CIC on or off (any λ > 0 is on), learnable queries or mean pooling, the history
strategy, the set of modalities, content or none. Without content the content knobs are inert,
so an ID-only config is `id_only` whatever they say. Runs are tagged with the result, so the
Runs and Ablations pages never group a contradicting run under the arm it left.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from em3.config import ARMS, PRESETS, Config, flatten, with_arm, with_overrides

CUSTOM = "custom"
ARM_KEYS: tuple[str, ...] = tuple(sorted({key for overrides in ARMS.values() for key in overrides}))


def _meaning(key: str, value: Any) -> Any:
    """What a knob's value means for the arm (the comparison key), from its flattened value."""
    if key == "model.cic.weight":
        return "CIC on" if float(value) > 0 else "CIC off"
    if key == "model.fusion.mode":
        return "mean pooling" if value == "mean" else "learnable queries"
    if key == "model.fusion.modalities":
        return "+".join(sorted(str(value).split(",")))
    return value


@lru_cache(maxsize=None)
def arm_definition(arm: str, preset: str = "") -> dict[str, Any]:
    """{arm-defining key: meaning} of a named arm applied to the default config, or on top of a synthetic
    preset's own arm-defining settings (the `audio` preset fuses image, text and audio: its em3 does too)."""
    base = {k: v for k, v in PRESETS.get(preset, {}).items() if k in ARM_KEYS}
    flat = flatten(with_arm(with_overrides(Config(), base), arm))
    return {key: _meaning(key, flat[key]) for key in ARM_KEYS}


def _preset_of(cfg: Config) -> str:
    return cfg.data.preset if cfg.data.source == "synthetic" else ""


def arm_conflicts(cfg: Config) -> list[str]:
    """One sentence per arm-defining knob of cfg that contradicts cfg.model.arm ([] when it is the arm)."""
    arm, flat = cfg.model.arm, flatten(cfg)
    want = arm_definition(arm, _preset_of(cfg))
    keys = ARM_KEYS if cfg.model.use_content and want["model.use_content"] else ("model.use_content",)
    return [f"{key} = {flat[key]} ({_meaning(key, flat[key])}) but arm {arm} means {want[key]}"
            for key in keys if _meaning(key, flat[key]) != want[key]]


def arm_of(cfg: Config) -> str:
    """cfg.model.arm when the config is what that arm means, else "custom"."""
    return CUSTOM if arm_conflicts(cfg) else cfg.model.arm


def arm_tags(cfg: Config) -> dict[str, str]:
    """The run tags naming its arm: em3.arm, plus em3.base_arm (the arm it started from) for a custom run."""
    arm = arm_of(cfg)
    return {"em3.arm": arm} if arm != CUSTOM else {"em3.arm": CUSTOM, "em3.base_arm": cfg.model.arm}


def arm_label(arm: str, base_arm: str = "") -> str:
    """How the pages name a run's arm: 'custom (from em3)' for a custom run, else the arm."""
    return f"{CUSTOM} (from {base_arm})" if arm == CUSTOM and base_arm else arm
