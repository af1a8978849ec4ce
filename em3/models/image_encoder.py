"""The frozen image encoder: a transformers vision model whose last feature map becomes tokens.

Shape letters: N images, C channels of the feature map, H' x W' its grid, Ti = H'*W' tokens.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from em3.config import ConfigError
from em3.modalities.base import TokenTop
from em3.paths import resolve_image_encoder

SCRATCH = "scratch"
# Bump when the scratch architecture or its initialisation changes: it is part of the cache key.
SCRATCH_IMAGE_VERSION = 2
SCRATCH_IMAGE_SEED = 1234
# Scratch MobileNetV2: full width, only the stem and the first SCRATCH_IMAGE_BLOCKS inverted-residual
# blocks (stride 8), then a 2x2 stride-2 patch conv to SCRATCH_IMAGE_DIM channels: overall stride 16,
# so a 64x64 image gives a 4x4 grid of 448-d tokens.
SCRATCH_IMAGE_CONFIG: dict[str, Any] = {
    "depth_multiplier": 1.0, "output_stride": 16, "finegrained_output": False,
    "hidden_act": "relu", "image_size": 64,
}
SCRATCH_IMAGE_BLOCKS = 3
SCRATCH_IMAGE_PATCH = 2
SCRATCH_IMAGE_DIM = 448
SCRATCH_RESIDUAL_SCALE = 0.05
# Pixels -> [-1, 1], as the pretrained MobileNetV2 processor does.
SCRATCH_MEAN = (0.5, 0.5, 0.5)
SCRATCH_STD = (0.5, 0.5, 0.5)


@dataclass
class ImageEncoder:
    """A frozen vision backbone (always eval, no grad) plus its pixel normalisation."""

    name: str                  # as configured ("scratch", a hub id or a path)
    source: str                # what was loaded (the resolved path or hub id)
    model: nn.Module
    mean: np.ndarray           # (3,) per-channel mean after rescaling to [0, 1]
    std: np.ndarray            # (3,)
    rescale: float = 1 / 255
    before_top: bool = False   # tokens are the input of the last block (`fold_top`), not its output
    _shapes: dict[tuple[int, int], tuple[tuple[int, int], int]] = field(default_factory=dict, repr=False)

    @property
    def dim(self) -> int:
        """C, the channels of the last feature map."""
        return self.grid_and_dim((64, 64))[1]

    def grid_and_dim(self, size: tuple[int, int]) -> tuple[tuple[int, int], int]:
        """((H', W'), C) of the tokens an image of size (H, W) gives."""
        if size not in self._shapes:
            out = self._forward(torch.zeros(1, 3, size[0], size[1]))  # (1, C, H', W')
            self._shapes[size] = (int(out.shape[2]), int(out.shape[3])), int(out.shape[1])
        return self._shapes[size]

    def pixels(self, image: Image.Image, size: tuple[int, int]) -> np.ndarray:
        """One RGB image resized to (H, W) and normalised: (3, H, W) float32."""
        img = image.convert("RGB")
        if img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) * self.rescale  # (H, W, 3)
        arr = (arr - self.mean) / self.std
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def encode(self, images: Sequence[Image.Image | None], *, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (N, Ti, C) float32 and mask (N, Ti) bool; a None image gives zeros and an all-False row."""
        present = [i for i, im in enumerate(images) if im is not None]
        (gh, gw), dim = self.grid_and_dim(size)
        tokens = torch.zeros(len(images), gh * gw, dim)
        mask = torch.zeros(len(images), gh * gw, dtype=torch.bool)
        if present:
            x = torch.from_numpy(np.stack([self.pixels(images[i], size) for i in present]))  # (n, 3, H, W)
            fmap = self._forward(x)                                                     # (n, C, H', W')
            tokens[present] = fmap.flatten(2).transpose(1, 2)                           # (n, Ti, C)
            mask[present] = True
        return tokens, mask

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # eval() on every call: train-mode BatchNorm would overwrite the (folded) running statistics.
        self.model.eval()
        if self.before_top:
            top, self.model.conv_1x1 = self.model.conv_1x1, nn.Identity()   # the block's input comes out
            try:
                out = self.model(pixel_values=x).last_hidden_state
            finally:
                self.model.conv_1x1 = top
        else:
            out = self.model(pixel_values=x).last_hidden_state
        if out.dim() != 4:
            raise ConfigError(f"encoder.image_encoder: {self.name!r} gives a {out.dim()}-d last_hidden_state; "
                              "expected a (N, C, H, W) feature map (a convolutional backbone such as MobileNetV2)")
        return out.float()


def fold_top(model: nn.Module, *, name: str = "") -> TokenTop:
    """MobileNetV2's last block (`conv_1x1`: a 1x1 conv, BatchNorm, activation) as one per-token layer
    act(x W^T + b), the BatchNorm's running statistics folded into W and b (exact in eval mode).

    ConfigError when the backbone has no such block (the scratch encoder's last conv is a 2x2 patch conv).
    """
    layer = getattr(model, "conv_1x1", None)
    conv = getattr(layer, "convolution", None)
    if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
        raise ConfigError(f"encoder.image_top = trained: the image encoder {name!r} has no 1x1 last block to train "
                          f"(conv_1x1 is {conv!r}); use a pretrained MobileNetV2, or image_top = frozen")
    w = conv.weight.detach()[:, :, 0, 0].double()                                  # (C_out, C_in)
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    bn = layer.normalization
    if bn is not None:
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)   # (C_out,)
        w = w * scale[:, None]
        b = (b - bn.running_mean.double()) * scale + bn.bias.detach().double()
    act = layer.activation
    kind = ("none" if act is None else "relu6" if isinstance(act, nn.ReLU6)
            else "relu" if isinstance(act, nn.ReLU) else None)
    if kind is None:
        raise ConfigError(f"encoder.image_top = trained: the last block of {name!r} ends in {act!r}; "
                          "expected ReLU6, ReLU or no activation")
    return TokenTop(weight=w.float().numpy(), bias=b.float().numpy(), activation=kind)


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def build_scratch_image_model() -> nn.Module:
    """A small, randomly initialised, shallow MobileNetV2, identical in every process (fixed seed, scoped RNG).

    A random network is no feature learner: every random layer mixes colour, shape and texture
    further, and through the full 17-block stack linear probes recover little of them. So only the
    stem and the first few blocks are kept, and the last 1x1 conv is replaced by a random 2x2
    stride-2 patch conv that lifts each 2x2 cell to SCRATCH_IMAGE_DIM ReLU features (random
    features keep local colour/edge information linearly readable). Kaiming init keeps unit scale
    (HF's std 0.02 init vanishes); residual branches are scaled by 0.05 (near-identity blocks).
    """
    from transformers import MobileNetV2Config, MobileNetV2Model
    from transformers.models.mobilenet_v2.modeling_mobilenet_v2 import MobileNetV2ConvLayer

    config = MobileNetV2Config(**SCRATCH_IMAGE_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SCRATCH_IMAGE_SEED)
        model = MobileNetV2Model(config, add_pooling_layer=False)
        model.layer = model.layer[:SCRATCH_IMAGE_BLOCKS]
        channels = model.layer[-1].reduce_1x1.convolution.out_channels
        model.conv_1x1 = MobileNetV2ConvLayer(config, in_channels=channels, out_channels=SCRATCH_IMAGE_DIM,
                                              kernel_size=SCRATCH_IMAGE_PATCH, stride=SCRATCH_IMAGE_PATCH)
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                linear = name.endswith("reduce_1x1.convolution")  # projection convs have no activation
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="linear" if linear else "relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            for block in model.layer:
                if block.use_residual:
                    block.reduce_1x1.convolution.weight.mul_(SCRATCH_RESIDUAL_SCALE)
    return _freeze(model)


def load_image_encoder(name: str, *, before_top: bool = False) -> ImageEncoder:
    """The configured image encoder: 'scratch', a hub id or a local path ($EM3_IMAGE_ENCODER for the default).
    With `before_top`, its tokens are the input of the last block (see `fold_top`)."""
    if name == SCRATCH:
        model = build_scratch_image_model()
        if before_top:
            fold_top(model, name=name)   # raises: the scratch encoder's last block is a patch conv
        return ImageEncoder(name=name, source=SCRATCH, model=model,
                            mean=np.asarray(SCRATCH_MEAN, np.float32), std=np.asarray(SCRATCH_STD, np.float32))
    from transformers import AutoImageProcessor, AutoModel

    source = resolve_image_encoder(name)
    try:
        with quiet_transformers():
            processor = AutoImageProcessor.from_pretrained(source)
            model = AutoModel.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"encoder.image_encoder: cannot load {name!r} from {source!r} ({exc}); set "
                          "$EM3_IMAGE_ENCODER to a local copy, or use 'scratch'") from exc
    mean = np.asarray(getattr(processor, "image_mean", None) or (0.0, 0.0, 0.0), np.float32)
    std = np.asarray(getattr(processor, "image_std", None) or (1.0, 1.0, 1.0), np.float32)
    rescale = float(getattr(processor, "rescale_factor", 1 / 255) or 1 / 255)
    if before_top:
        fold_top(model, name=name)       # fail now, before any image is encoded
    return ImageEncoder(name=name, source=source, model=_freeze(model), mean=mean, std=std, rescale=rescale,
                        before_top=before_top)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and weight-loading bar: a headless backbone or a truncated
    text model leaves classifier / upper-layer weights unused by design, which is not news."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def image_encoder_identity(name: str) -> dict[str, Any]:
    """What the cache key records of an image encoder, without loading it (cheap)."""
    if name == SCRATCH:
        return {"name": SCRATCH, "version": SCRATCH_IMAGE_VERSION, "seed": SCRATCH_IMAGE_SEED,
                "config": SCRATCH_IMAGE_CONFIG, "residual_scale": SCRATCH_RESIDUAL_SCALE,
                "blocks": SCRATCH_IMAGE_BLOCKS, "patch": SCRATCH_IMAGE_PATCH, "dim": SCRATCH_IMAGE_DIM}
    return {"name": name, **local_model_identity(resolve_image_encoder(name))}


def local_model_identity(source: str) -> dict[str, Any]:
    """The source plus, for a local directory, the hash of its JSON configs and its file sizes."""
    path = Path(source)
    if not path.is_dir():
        return {"source": source}
    digest = hashlib.sha256()
    files = []
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        files.append([f.name, f.stat().st_size])
        if f.suffix == ".json":
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return {"source": str(path), "configs_sha256": digest.hexdigest(), "files": json.loads(json.dumps(files))}
