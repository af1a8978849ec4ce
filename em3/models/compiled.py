"""`speed.compile`: torch.compile (inductor) of the ranker and/or the Fusion-Q-Former, in place.

`nn.Module.compile` compiles a module's call without renaming its parameters, so checkpoints and
`state_dict` keys are those of the eager model. Sizes are symbolic (`dynamic=True`): the unique-item
count of a batch changes every step, and a recompilation per count would never end. What it gives on
the CPU is in docs/RESULTS.md ("Speed"); every preset leaves it off.
"""
from __future__ import annotations

from torch import nn

from em3.config import COMPILE_TARGETS

# each speed.compile value -> the parts it compiles; config.COMPILE_TARGETS is the list of allowed values
TARGETS = {"off": (), "ranker": ("ranker",), "fusion": ("fusion",), "both": ("ranker", "fusion")}
if set(TARGETS) != set(COMPILE_TARGETS):
    raise ImportError(f"em3/models/compiled.py: TARGETS {sorted(TARGETS)} must match "
                      f"em3.config.COMPILE_TARGETS {sorted(COMPILE_TARGETS)}")


def compile_modules(model: nn.Module, target: str) -> list[str]:
    """Compile the named parts of an EM3Model ('off', 'ranker', 'fusion', 'both'); returns what was compiled
    (the fusion only exists for the Fusion-Q-Former arms: id_only and precomputed compile their ranker alone)."""
    if target not in TARGETS:
        raise ValueError(f"speed.compile: unknown value {target!r}; expected one of {', '.join(TARGETS)}")
    done = []
    for name in TARGETS[target]:
        module = model.ranker if name == "ranker" else getattr(getattr(model, "content", None), "fusion", None)
        if module is None:
            continue
        module.compile(dynamic=True)
        done.append(name)
    return done
