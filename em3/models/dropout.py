"""A cheaper dropout for the CPU: the same Bernoulli mask, drawn 3 elements per 64-bit random number.

torch's CPU dropout draws one random number per element (`bernoulli_`, ~7 ns an element here), which
made DIN's attention-unit dropout over (B, L, H) = (1024, 50, 64) 15% of an em3 MovieLens step
(docs/RESULTS.md, "Speed"). Here one `random_()` int64 is split into three 16-bit lanes (its top
lane is left out: int64 `random_` never sets the sign bit), each compared with round(p·2¹⁶), so an
element is dropped with probability round(p·2¹⁶)/2¹⁶ (|error| ≤ 2⁻¹⁷) and kept ones are scaled by
1/(1-p), as nn.Dropout does. The mask comes from torch's seeded generator: a seed gives one mask.

`speed.fast_dropout` swaps every nn.Dropout of a built model for FastDropout (`use_fast_dropout`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

LANES = 3            # 16-bit lanes used of each int64 (the 4th holds the always-zero sign bit)
LEVELS = 1 << 16


def drop_mask(shape: torch.Size | tuple[int, ...], p: float, *, device: torch.device | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """A bool tensor of `shape`, True where an element is dropped (probability round(p * 2**16) / 2**16)."""
    n = 1
    for s in shape:
        n *= int(s)
    words = torch.empty((n + LANES - 1) // LANES, dtype=torch.int64, device=device).random_(generator=generator)
    lanes = words.view(torch.int16).view(-1, 4)[:, :LANES]              # (words, 3), each uniform on int16
    threshold = round(p * LEVELS) - LEVELS // 2                          # int16 values below it: dropped
    return (lanes < threshold).reshape(-1)[:n].view(tuple(shape))


class _Dropout(torch.autograd.Function):
    """y = x * keep / (1 - p); the backward applies the same mask (saved as bool, 1 byte an element)."""

    @staticmethod
    def forward(ctx, x: Tensor, drop: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return torch.where(drop, 0.0, x * scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (drop,) = ctx.saved_tensors
        return torch.where(drop, 0.0, grad * ctx.scale), None, None


class FastDropout(nn.Module):
    """nn.Dropout's contract (training only, inverted scaling) with the mask of `drop_mask`."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"FastDropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return _Dropout.apply(x, drop_mask(x.shape, self.p, device=x.device), 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _ReluDrop(torch.autograd.Function):
    """y = relu(x) with the dropped elements zeroed (unscaled: the caller folds 1/(1-p) into the next layer).
    y > 0 exactly where the gradient passes, so y alone is saved and the backward is one threshold_backward."""

    @staticmethod
    def forward(ctx, x: Tensor, drop: Tensor) -> Tensor:  # type: ignore[override]
        y = torch.relu(x).masked_fill_(drop, 0.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, y, 0.0), None


def relu_dropout(x: Tensor, dropout: nn.Module, *,
                 block: tuple[tuple[int, ...], Tensor] | None = None) -> tuple[Tensor, float]:
    """ReLU then `dropout` (a FastDropout, or a dropout with p = 0) as one masked select: -> (y, scale) with
    y * scale what Dropout(ReLU(x)) returns, with the same mask: one `drop_mask` draw of x's shape, as
    FastDropout makes. `block` = (shape, rows): x (R, C) holds only those rows of a (*shape, C) tensor
    flattened to rows; the mask is drawn for the whole block and those rows kept (the unpacked draw).
    A following Linear takes W * scale instead of a pass over y. Forward: the ReLU and an in-place fill;
    backward: one pass (against 3 and 3 for the ReLU, the scaling and the masking apart)."""
    p = float(dropout.p)
    if not dropout.training or p == 0.0:
        return torch.relu(x), 1.0
    if not isinstance(dropout, FastDropout):
        raise TypeError(f"relu_dropout: needs a FastDropout (its mask can be drawn here), got {type(dropout).__name__}")
    if block is None:
        drop = drop_mask(x.shape, p, device=x.device)
    else:
        shape, rows = block
        drop = drop_mask((*shape, x.shape[-1]), p, device=x.device).view(-1, x.shape[-1]).index_select(0, rows)
    return _ReluDrop.apply(x, drop), 1.0 / (1.0 - p)


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every nn.Dropout (p > 0) under `model` by FastDropout(p), in place; returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                setattr(parent, name, FastDropout(child.p))
                swapped += 1
    return swapped
