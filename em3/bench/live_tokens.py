"""Item tokens computed by the frozen backbones on every call: the "no feature cache" side of the efficiency lever.

A drop-in for em3.models.content.ItemTokenStore (same forward: items -> {modality: (tokens, mask)}), so `model.content.store = LiveTokenStore(...)` makes every training step run
MobileNetV2 and the text encoder on the step's (unique, with dedup) items. The images are decoded,
resized and normalised once up front (pixels kept as float16): what is measured is the backbones,
not JPEG decoding.

Shape letters: I items (rows I+1, row 0 = padding), N items asked for, Ti/Tt tokens, Ci/Ct widths.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from em3.config import ConfigError, EncoderConfig
from em3.data.schema import RawDataset, SampleSet
from em3.modalities.image import read_image, resolve_image_size
from em3.modalities.text import item_texts
from em3.models.encoders import load_image_encoder, load_text_encoder


class LiveTokenStore(nn.Module):
    """Runs the frozen image and text backbones on the asked-for items each call (no grad, eval mode)."""

    def __init__(self, raw: RawDataset, samples: SampleSet, enc: EncoderConfig):
        super().__init__()
        if enc.image_top != "frozen":
            raise ConfigError(f"encoder.image_top = {enc.image_top}: the live (no cache) token store runs the frozen "
                              "backbones whole; use image_top = frozen with it")
        size = resolve_image_size(raw, samples, enc)
        texts = item_texts(raw, np.asarray(samples.item_ids))
        self.image_enc = load_image_encoder(enc.image_encoder)
        self.text_enc = load_text_encoder(enc.text_encoder, enc.text_layers, corpus=texts)
        # Registered so .to(device) moves the backbones with the model; they stay frozen.
        self.image_model = self.image_enc.model
        self.text_model = self.text_enc.model
        n = samples.num_items
        pixels = np.zeros((n + 1, 3, size[0], size[1]), dtype=np.float16)   # (I+1, 3, H, W)
        has_image = np.zeros(n + 1, dtype=bool)
        for i, item_id in enumerate(samples.item_ids, start=1):
            img = read_image(raw, int(item_id))
            if img is not None:
                pixels[i] = self.image_enc.pixels(img, size)
                has_image[i] = True
        batch = self.text_enc.tokenizer([""] + texts, max_length=enc.max_text_len, truncation=True,
                                        padding="max_length", return_tensors="pt")
        batch["attention_mask"][0] = 0                                       # row 0 = padding
        self.register_buffer("pixels", torch.from_numpy(pixels), persistent=False)
        self.register_buffer("has_image", torch.from_numpy(has_image), persistent=False)
        self.register_buffer("input_ids", batch["input_ids"], persistent=False)        # (I+1, Tt)
        self.register_buffer("attention_mask", batch["attention_mask"], persistent=False)
        (gh, gw), self._image_dim = self.image_enc.grid_and_dim(size)
        self.num_image_tokens = gh * gw

    names = ("image", "text")   # the two modalities this lever measures live (the bench's base config)

    @property
    def dims(self) -> dict[str, int]:
        return {"image": int(self._image_dim), "text": int(self.text_enc.dim)}

    @torch.no_grad()
    def forward(self, items: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """items (N,) -> {"image": (N, Ti, Ci), (N, Ti); "text": (N, Tt, Ct), (N, Tt)}, as ItemTokenStore."""
        self.image_model.eval()   # BatchNorm holds folded statistics: never train mode
        self.text_model.eval()
        fmap = self.image_model(pixel_values=self.pixels[items].float()).last_hidden_state   # (N, Ci, H', W')
        has = self.has_image[items]                                                          # (N,)
        image = fmap.flatten(2).transpose(1, 2) * has[:, None, None]                          # (N, Ti, Ci)
        image_mask = has[:, None].expand(-1, image.shape[1])                                  # (N, Ti)
        ids, mask = self.input_ids[items], self.attention_mask[items]                        # (N, Tt)
        text = self.text_model(input_ids=ids, attention_mask=mask).last_hidden_state          # (N, Tt, Ct)
        text = text.float() * mask[..., None]
        return {"image": (image.float(), image_mask), "text": (text, mask.bool())}
