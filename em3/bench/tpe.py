"""A seeded TPE search (Optuna) whose only state is the finished runs: resumable from MLflow, shard-safe.

Each call rebuilds the study from the (point, val AUC) pairs finished so far and asks for one more
point. The sampler's seed is (seed, number of finished trials), so a given history always yields the
same next point: two processes sharing a store agree on it (and its config hash decides which one
trains it), a restarted session asks for exactly what the last one would have, and the first
`startup` points (random, before TPE has a model) are the same for every arm × ranker: each cell
starts from the same draws and gets the same number of trials.

A knob is `key=log:LOW:HIGH` (log-uniform float), `key=float:LOW:HIGH`, `key=int:LOW:HIGH` or
`key=choice:A,B,...` (values as `--set` takes them); choices that hold commas themselves (tuples such as
`model.ranker.mlp_hidden`) are separated by `|` instead: `choice:128,64|256,128`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

from em3.config import ConfigError

KINDS = ("log", "float", "int", "choice")
STARTUP = 3   # random points before TPE models the history (Optuna's default is 10: more than our budget)


@dataclass(frozen=True)
class Knob:
    """One searched config key: a numeric range (log / float / int) or a list of choices."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "choice":
            sep = " | " if any("," in c for c in self.choices) else ", "
            return f"`{self.key}` ∈ {{{sep.join(self.choices)}}}"
        scale = {"log": "log-uniform", "float": "uniform", "int": "integer"}[self.kind]
        return f"`{self.key}` ∈ [{self.low:g}, {self.high:g}] ({scale})"


def parse_space(items: Sequence[str], *, known: Mapping[str, object]) -> dict[str, Knob]:
    """`--space key=kind:...` strings -> {key: Knob}; every error names the item at fault."""
    space: dict[str, Knob] = {}
    for item in items:
        key, sep, spec = item.partition("=")
        kind, _, rest = spec.partition(":")
        key, kind = key.strip(), kind.strip()
        if not sep or kind not in KINDS or not rest:
            raise ConfigError(f"--space {item!r}: expected key=log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH, "
                              "choice:A,B,... or choice:A1,A2|B1,B2")
        if key not in known:
            raise ConfigError(f"--space {item!r}: unknown config key {key!r}")
        if key in space:
            raise ConfigError(f"--space {item!r}: {key} is searched twice")
        if kind == "choice":
            choices = tuple(c.strip() for c in rest.split("|" if "|" in rest else ",") if c.strip())
            if len(choices) < 2:
                raise ConfigError(f"--space {item!r}: a choice needs at least two values")
            space[key] = Knob(key, kind, choices=choices)
            continue
        try:
            low, high = (float(v) for v in rest.split(":"))
        except ValueError:
            raise ConfigError(f"--space {item!r}: expected two numbers LOW:HIGH after {kind}:") from None
        if not low < high or (kind == "log" and low <= 0) or (kind == "int" and (low, high) != (int(low), int(high))):
            raise ConfigError(f"--space {item!r}: need LOW < HIGH" + (", both > 0" if kind == "log" else "")
                              + (", both integers" if kind == "int" else ""))
        space[key] = Knob(key, kind, low=low, high=high)
    return space


def describe_space(space: Mapping[str, Knob], trials: int) -> str:
    """One line for the table notes."""
    return (f"seeded TPE (Optuna; the first {min(STARTUP, trials)} points random and the same for every cell), "
            f"{trials} trials per arm × ranker over " + " × ".join(k.describe() for k in space.values()))


def _distributions(space: Mapping[str, Knob]) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for k in space.values():
        if k.kind == "choice":
            out[k.key] = CategoricalDistribution(list(k.choices))
        elif k.kind == "int":
            out[k.key] = IntDistribution(int(k.low), int(k.high))
        else:
            out[k.key] = FloatDistribution(k.low, k.high, log=k.kind == "log")
    return out


def _value(knob: Knob, text: str) -> object:
    if knob.kind == "choice":
        return text
    return int(float(text)) if knob.kind == "int" else float(text)


def _text(knob: Knob, value: object) -> str:
    if knob.kind == "choice":
        return str(value)
    return str(int(value)) if knob.kind == "int" else f"{float(value):.3g}"   # 3 digits: readable, stable configs


def _inside(knob: Knob, value: object) -> bool:
    return value in knob.choices if knob.kind == "choice" else knob.low <= float(value) <= knob.high


def next_point(space: Mapping[str, Knob], history: Sequence[tuple[Mapping[str, str], float]], *,
               seed: int = 0, attempts: int = 8) -> dict[str, str] | None:
    """The next point to train, as {key: value text}, given the finished (point, val AUC) pairs (maximised).

    Points of the history outside the space (another space's runs) are ignored; a NaN AUC counts as a
    failed trial. Deterministic in (space, history, seed). A suggestion that repeats a finished point
    (after rounding to 3 digits) is asked again with the next seed; None after `attempts` repeats
    (the search has converged on points it has tried).
    """
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    dists = _distributions(space)
    trials, seen = [], set()
    for point, auc in history:
        if set(point) != set(space):
            continue
        params = {k: _value(space[k], point[k]) for k in space}
        if not all(_inside(space[k], v) for k, v in params.items()):
            continue
        seen.add(tuple(sorted((k, str(point[k])) for k in space)))
        state = optuna.trial.TrialState.COMPLETE if auc == auc else optuna.trial.TrialState.FAIL
        trials.append(optuna.trial.create_trial(params=params, distributions=dists, state=state,
                                                value=auc if auc == auc else None))
    for attempt in range(attempts):
        sampler = optuna.samplers.TPESampler(seed=(seed * 1_000 + attempt) * 100_003 + len(trials),
                                             n_startup_trials=STARTUP)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.add_trials(trials)
        trial = study.ask(dists)
        point = {k: _text(space[k], trial.params[k]) for k in space}
        if tuple(sorted(point.items())) not in seen:
            return point
    return None
