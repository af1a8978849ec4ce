"""The modality registry: every kind of item content (image, text, tabular, audio) is one registered Modality.

A modality is a name, a way to turn every item into tokens (+ mask) for the feature cache, and how the
dashboard draws attention over its tokens. The rest of the code — the config's `model.fusion.modalities`,
the feature cache, the token store, the Fusion-Q-Former, the explain artifacts and the Attention page —
takes whatever modalities are listed here, by name, in this order. To add one: a module in this package
defining a `Modality` (see em3/modalities/base.py) and a line in `_MODULES`.

This module imports nothing heavy (the config imports it); `get` loads a modality's module on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from em3.modalities.base import Modality

# name -> module defining MODALITY; the order is the fused token order (and the attention columns')
_MODULES: dict[str, str] = {
    "image": "em3.modalities.image",
    "text": "em3.modalities.text",
    "tabular": "em3.modalities.tabular",
    "audio": "em3.modalities.audio",
}
NAMES: tuple[str, ...] = tuple(_MODULES)
DEFAULT: tuple[str, ...] = ("image", "text")   # what an em3 run fuses unless model.fusion.modalities says else
VIEWS = ("grid", "tokens", "bars")             # how the Attention page draws a modality's token weights


def get(name: str) -> "Modality":
    """The registered modality `name` (ValueError naming the known ones otherwise)."""
    if name not in _MODULES:
        raise ValueError(f"modality {name!r} is not registered; known: {', '.join(NAMES)}")
    return importlib.import_module(_MODULES[name]).MODALITY


def ordered(names: "tuple[str, ...] | list[str]") -> tuple[str, ...]:
    """`names` in registry order (the order tokens are fused and attention columns laid out)."""
    return tuple(n for n in NAMES if n in names)
