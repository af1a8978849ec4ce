"""The image modality: the frozen vision backbone's last feature map, one token per grid cell."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from em3.modalities.base import Encoded, Modality, TokenTop

log = logging.getLogger(__name__)

FALLBACK_IMAGE_SIZE = (224, 224)


def read_image(raw: Any, item_id: int) -> Image.Image | None:
    """The item's RGB image, or None when missing or unreadable (logged; the item gets a masked row)."""
    try:
        img = raw.load_image(int(item_id))
        return None if img is None else img.convert("RGB")   # convert() decodes: truncated files fail here
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        log.warning("%s: image of item_id %s is unreadable (%s); masked", raw.name, item_id, exc)
        return None


def resolve_image_size(raw: Any, samples: Any, enc: Any) -> tuple[int, int]:
    """(H, W) every image is resized to: the config's, else the source's native size, else the first image's."""
    if enc.image_height > 0:
        return enc.image_height, enc.image_width
    if raw.image_size[0] > 0 and raw.image_size[1] > 0:
        return int(raw.image_size[0]), int(raw.image_size[1])
    for item_id in samples.item_ids:  # sizes vary: the first readable image sets the common size
        img = read_image(raw, item_id)
        if img is not None:
            return img.height, img.width
    return FALLBACK_IMAGE_SIZE  # no image at all: only shapes the all-masked rows


def _key_inputs(raw: Any, samples: Any, enc: Any) -> dict[str, Any]:
    from em3.models.encoders import image_encoder_identity
    inputs = {"image_encoder": image_encoder_identity(enc.image_encoder),
              "image_size": list(resolve_image_size(raw, samples, enc))}
    if enc.image_top != "frozen":   # only then: every frozen-top cache keeps its key
        inputs["image_top"] = enc.image_top
    return inputs


@dataclass
class _ImageBatches:
    raw: Any
    model: Any
    size: tuple[int, int]
    source: str
    shape: tuple[int, int]
    grid: tuple[int, int]
    top: TokenTop | None = None      # encoder.image_top = trained: the last block, cached beside its input

    def encode(self, item_ids: np.ndarray) -> Encoded:
        images = [read_image(self.raw, i) for i in item_ids]
        tokens, mask = self.model.encode(images, size=self.size)          # (n, Ti, Ci), (n, Ti)
        return Encoded(tokens=tokens.numpy(), mask=mask.numpy(), labels=[[] for _ in images])


def _open(raw: Any, samples: Any, enc: Any) -> _ImageBatches:
    from em3.models.image_encoder import fold_top, load_image_encoder
    trained = enc.image_top == "trained"
    model = load_image_encoder(enc.image_encoder, before_top=trained)
    size = resolve_image_size(raw, samples, enc)
    grid, ci = model.grid_and_dim(size)
    return _ImageBatches(raw=raw, model=model, size=size, source=model.source,
                         shape=(grid[0] * grid[1], ci), grid=grid,
                         top=fold_top(model.model, name=enc.image_encoder) if trained else None)


MODALITY = Modality(name="image", view="grid", key_inputs=_key_inputs, open=_open,
                    describe="the item's picture: the frozen vision backbone's last feature map, a token per cell")
