"""`speed.compile`: torch.compile (inductor) of the ranker and/or the Fusion-Q-Former, in place.

`nn.Module.compile` compiles a module's call without renaming its parameters, so checkpoints and
`state_dict` keys are those of the eager model. Shapes are dynamic (the unique-item count of a batch
changes every step): one graph serves every batch instead of a recompilation per shape. Dynamo traces
the Fusion-Q-Former also when the lora history path calls it through `functional_call` with other
weights; those enter the graph as inputs.
"""
from __future__ import annotations

from torch import nn

TARGETS = {"off": (), "ranker": ("ranker",), "fusion": ("fusion",), "both": ("ranker", "fusion")}


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
