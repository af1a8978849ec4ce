"""The frozen content encoders, one import away: image (last feature map -> tokens) and text (token states).

`scratch` names a small random encoder built in code (no download); any other name is a Hugging
Face id or local path loaded with `AutoModel` (the public defaults yield to $EM3_IMAGE_ENCODER /
$EM3_TEXT_ENCODER, see em3.paths).
"""
from __future__ import annotations

from em3.models.image_encoder import (SCRATCH, ImageEncoder, build_scratch_image_model, image_encoder_identity,
                                      load_image_encoder)
from em3.models.text_encoder import (TextEncoder, build_scratch_text_model, item_text, load_text_encoder,
                                     scratch_tokenizer, text_encoder_identity)

__all__ = [
    "SCRATCH", "ImageEncoder", "TextEncoder", "load_image_encoder", "load_text_encoder",
    "build_scratch_image_model", "build_scratch_text_model", "scratch_tokenizer",
    "image_encoder_identity", "text_encoder_identity", "item_text",
]
