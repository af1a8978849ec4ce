"""What a modality is: its cache-key inputs, its batch encoder, and its tokens as cached.

Shape letters: I items (rows I+1, row 0 = padding), n items of a batch, T tokens, C token width.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

if TYPE_CHECKING:
    from em3.config import EncoderConfig
    from em3.data.schema import RawDataset, SampleSet


@dataclass(frozen=True)
class Encoded:
    """One batch of items through a modality's encoder."""

    tokens: np.ndarray                  # (n, T, C) float32
    mask: np.ndarray                    # (n, T) bool, True = real token; all False = the item lacks it
    labels: list[list[str]]             # per item, a label per real token (words, field=value, time spans)


class BatchEncoder(Protocol):
    """A modality's loaded encoder: fixed token shape, encodes items by item_id."""

    source: str                         # what was loaded (a path, hub id, or 'scratch')
    shape: tuple[int, int]              # (T, C)
    grid: tuple[int, int] | None        # (H', W') with H'*W' = T for grid views, else None

    def encode(self, item_ids: np.ndarray) -> Encoded: ...


@dataclass(frozen=True)
class Modality:
    """A registered modality (em3/modalities/__init__.py)."""

    name: str
    view: str                                                  # grid | tokens | bars (the Attention page)
    describe: str                                              # one line for help texts and the page
    key_inputs: Callable[["RawDataset", "SampleSet", "EncoderConfig"], dict[str, Any]]
    #   everything its tokens depend on besides the dataset and item order (encoder identity, sizes): the cache key
    open: Callable[["RawDataset", "SampleSet", "EncoderConfig"], BatchEncoder]
    #   load the encoder for this dataset (may read the whole item table, e.g. a tabular vocabulary)
    available: Callable[["RawDataset"], bool] = field(default=lambda raw: True)
    #   whether the source has this modality's input at all (no: a config fusing it is refused, by name)


ACTIVATIONS = ("none", "relu", "relu6")


@dataclass(frozen=True)
class TokenTop:
    """A backbone's last per-token layer, kept out of the cache so the ranking loss can train it:
    y = act(x W^T + b) on every token (MobileNetV2's 1x1 conv block with its BatchNorm folded in).

    The cache then holds the layer's input x (the backbone's second-to-last map) and this layer's
    pretrained weights, which the model copies as its starting point (encoder.image_top = trained)."""

    weight: np.ndarray                  # (C_out, C_in) float32
    bias: np.ndarray                    # (C_out,) float32
    activation: str                     # one of ACTIVATIONS

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"TokenTop.activation: {self.activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"TokenTop: weight {self.weight.shape} and bias {self.bias.shape}; expected "
                             "(C_out, C_in) and (C_out,)")

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class ModalityTokens:
    """One modality's tokens of every item, as the feature cache holds them."""

    tokens: np.ndarray                  # (I+1, T, C) float16, memory-mapped; row 0 = padding (zeros)
    mask: np.ndarray                    # (I+1, T) bool
    labels: list[list[str]]             # per item index, its token labels (row 0: [])
    grid: tuple[int, int] | None        # image grid, or None
    missing: int                        # items without this modality's input (all-masked rows)
    top: TokenTop | None = None         # the trainable last layer the tokens still go through (else None)
