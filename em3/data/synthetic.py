"""The built-in synthetic dataset: a seeded catalogue whose items carry latent attributes, some visible
only in the image and some only in the text (the `audio` preset: some only in a sound), and users who
click by a logistic model of their tastes.

    logit(u, i) = bias + sum_a weight_a * taste[u, a, value_a(i)] + pop_weight * popularity(i) + noise
    label ~ Bernoulli(sigmoid(logit))

A user's taste for an attribute value is the value's appeal to everyone (shared), plus their
segment's prototype, plus an individual deviation. Impressions are
popularity-skewed, and timestamps give each user an ordered sequence. `ground_truth` keeps
everything needed to check what a model learned.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from em3.data.schema import RawDataset
from em3.data.synthetic_audio import AUDIO_ATTRIBUTES, AUDIO_VERSION, SyntheticAudio, draw_audio_nuisance
from em3.data.synthetic_render import IMAGE_ATTRIBUTES, IMAGE_SIZE, TEXT_ATTRIBUTES, draw_item, item_text
from em3.errors import DataError

GENERATOR_VERSION = "synthetic/2"
ATTRIBUTES = {**IMAGE_ATTRIBUTES, **TEXT_ATTRIBUTES}
MODALITY = {**{a: "image" for a in IMAGE_ATTRIBUTES}, **{a: "text" for a in TEXT_ATTRIBUTES},
            **{a: "audio" for a in AUDIO_ATTRIBUTES}}
# Per-attribute strength: the image, the text and (audio preset) the audio side carry about the same signal.
WEIGHTS = {"shape": 0.9, "colour": 0.9, "pattern": 0.7, "genre": 1.1, "mood": 0.9, "pitch": 1.0, "rhythm": 0.8}
AUDIO_PRESETS = ("audio",)   # presets whose items also carry AUDIO_ATTRIBUTES and a sound


@dataclass(frozen=True)
class Size:
    items: int
    users: int
    impressions_per_user: int   # mean; each user gets 0.5x .. 1.5x this


SIZES = {"tiny": Size(items=200, users=100, impressions_per_user=50),
         "demo": Size(items=3000, users=1000, impressions_per_user=100),
         # appended last: a preset's RNG stream is keyed on its index in this table
         "small": Size(items=600, users=400, impressions_per_user=60),
         # issue 15: a fourth modality (audio-only attributes) and long behaviour sequences
         "audio": Size(items=600, users=400, impressions_per_user=60),
         "long": Size(items=5000, users=200, impressions_per_user=3000)}
# Appeal of each attribute value to everyone (std, before WEIGHTS): the part of taste a model can learn
# from other users' clicks on similar items and carry to a cold item. synthetic/1 had none, so the
# attribute effects averaged out over the segments and the generator's own attribute logit, known
# exactly, ranked cold items little better than a per-user bias (docs/notes/synthetic_signal.md).
SHARED = 2.0
SEGMENTS = 6            # taste prototypes users are drawn around
INDIVIDUAL = 0.6        # std of a user's deviation from their segment prototype
POP_WEIGHT = 0.3        # effect of popularity on the click logit
NOISE = 0.5             # std of the per-impression logit noise
BIAS = -0.4
T0 = 1_700_000_000      # unix time of the first impression


class SyntheticImages:
    """`load_image` of the synthetic dataset: renders an item's picture on demand, deterministically."""

    def __init__(self, items: pd.DataFrame, nuisance: dict[str, np.ndarray]) -> None:
        self._row = {int(i): k for k, i in enumerate(items["item_id"].to_numpy())}
        self._attrs = {a: items[a].to_numpy() for a in IMAGE_ATTRIBUTES}
        self._n = nuisance
        self.missing: set[int] = set()
        self.unreadable: dict[int, str] = {}

    def __call__(self, item_id: int) -> Image.Image | None:
        k = self._row.get(int(item_id))
        if k is None:
            self.missing.add(int(item_id))
            return None
        n = self._n
        return draw_item(shape=self._attrs["shape"][k], colour=self._attrs["colour"][k],
                         pattern=self._attrs["pattern"][k], background=tuple(int(c) for c in n["background"][k]),
                         centre=(float(n["centre"][k, 0]), float(n["centre"][k, 1])), radius=float(n["radius"][k]),
                         rotation=float(n["rotation"][k]), tint=tuple(int(c) for c in n["tint"][k]),
                         phase=int(n["phase"][k]))


def _impressions(rng: np.random.Generator, size: Size, popularity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user index, item index) pairs: each user sees distinct items, skewed to popular ones."""
    m = size.impressions_per_user
    counts = rng.integers(m // 2, m + m // 2 + 1, size=size.users).clip(max=size.items)
    # Gumbel top-k: sampling without replacement with probability ∝ exp(popularity)
    keys = popularity[None, :] + rng.gumbel(size=(size.users, size.items))   # (U, I)
    top = np.argsort(-keys, axis=1)[:, : counts.max()]
    take = np.arange(top.shape[1])[None, :] < counts[:, None]
    users = np.broadcast_to(np.arange(size.users)[:, None], top.shape)[take]
    return users, top[take]


def generate(preset: str, seed: int = 0) -> RawDataset:
    """A synthetic dataset of the named preset (a key of SIZES); the same (preset, seed) gives the same data."""
    if preset not in SIZES:
        raise DataError(f"synthetic preset {preset!r} is unknown; expected one of {', '.join(SIZES)}")
    size = SIZES[preset]
    rng = np.random.default_rng([int(seed), list(SIZES).index(preset)])
    audio = preset in AUDIO_PRESETS
    heard = list(AUDIO_ATTRIBUTES) if audio else []
    # Everything audio comes from its own stream: the image/text draws, impressions and every other
    # preset stay exactly as without it (only the audio preset's labels also depend on the sound).
    arng = np.random.default_rng([int(seed), list(SIZES).index(preset), 2])
    attributes = {**ATTRIBUTES, **AUDIO_ATTRIBUTES} if audio else ATTRIBUTES
    names = list(ATTRIBUTES) + heard

    # step 1: items - latent attribute codes, popularity, picture nuisance (mild: synthetic/2), words
    codes = np.stack([rng.integers(len(ATTRIBUTES[a]), size=size.items) for a in ATTRIBUTES]
                     + [arng.integers(len(AUDIO_ATTRIBUTES[a]), size=size.items) for a in heard], axis=1)  # (I, A)
    popularity = rng.normal(0.0, 1.0, size=size.items)
    nuisance = {
        "background": rng.integers(215, 256, size=(size.items, 3)),
        "centre": 32 + rng.uniform(-3, 3, size=(size.items, 2)),
        "radius": rng.uniform(19, 24, size=size.items),
        "rotation": rng.uniform(-0.2, 0.2, size=size.items),
        "tint": rng.integers(-10, 11, size=(size.items, 3)),
        "phase": rng.integers(0, 8, size=size.items),
    }
    item_ids = np.arange(1, size.items + 1, dtype=np.int64)
    sound = draw_audio_nuisance(arng, size.items) if audio else {}
    values = {a: np.asarray(attributes[a], dtype=object)[codes[:, j]] for j, a in enumerate(names)}
    texts = [item_text(values["genre"][k], values["mood"][k], rng=rng) for k in range(size.items)]
    items = pd.DataFrame({"item_id": item_ids, "title": [t for t, _ in texts], "text": [x for _, x in texts]})
    items["image_path"] = pd.Series([f"synthetic:{i}" for i in item_ids], dtype=object)  # rendered in memory
    for a in names:
        items[a] = values[a]

    # step 2: users - a segment each, tastes = shared appeal + segment prototype + individual deviation
    vmax = max(len(v) for v in attributes.values())
    valid = np.array([[v < len(attributes[a]) for v in range(vmax)] for a in names])          # (A, V)
    prototypes = np.concatenate([rng.normal(0.0, 1.0, size=(SEGMENTS, len(ATTRIBUTES), vmax)),
                                 arng.normal(0.0, 1.0, size=(SEGMENTS, len(heard), vmax))], axis=1)
    segment = rng.integers(SEGMENTS, size=size.users)
    deviation = INDIVIDUAL * np.concatenate([rng.normal(size=(size.users, len(ATTRIBUTES), vmax)),
                                             arng.normal(size=(size.users, len(heard), vmax))], axis=1)
    # Shared appeal: drawn from its own stream (so impressions do not move with SHARED) and standardised
    # over each attribute's values, so WEIGHTS alone set how much each attribute, and modality, matters.
    draw = np.random.default_rng([int(seed), list(SIZES).index(preset), 1]).normal(size=(len(names), vmax))
    shared = np.zeros((len(names), vmax))                                                       # (A, V)
    for j, a in enumerate(names):
        z = draw[j, : len(attributes[a])]
        shared[j, : len(z)] = SHARED * (z - z.mean()) / z.std()
    tastes = (shared[None] + prototypes[segment] + deviation) * valid                          # (U, A, V)

    # step 3: impressions, the logistic click model, timestamps
    u, i = _impressions(rng, size, popularity)
    weight = np.array([WEIGHTS[a] for a in names])
    affinity = (tastes[u[:, None], np.arange(len(names))[None, :], codes[i]] * weight).sum(axis=1)   # (N,)
    logit = BIAS + affinity + POP_WEIGHT * popularity[i] + NOISE * rng.normal(size=len(u))
    label = (rng.random(len(u)) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    shuffle = np.lexsort((rng.random(len(u)), u))     # a user's impressions in random order, not by popularity
    u, i, logit, label = u[shuffle], i[shuffle], logit[shuffle], label[shuffle]
    start = T0 + rng.integers(0, 60 * 86400, size=size.users)
    gaps = (rng.exponential(1200.0, size=len(u)) // 60 * 60).astype(np.int64)   # minute steps: some ties
    first = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    gaps[first] = 0
    cs = np.cumsum(gaps)
    seq = cs - np.repeat(cs[first], np.diff(np.r_[first, len(u)]))   # seconds since the user's first impression
    timestamp = start[u] + seq
    order = np.lexsort((u, timestamp))                 # a log in time order, like real data
    interactions = pd.DataFrame({"user_id": u[order] + 1, "item_id": item_ids[i[order]],
                                 "timestamp": timestamp[order].astype(np.int64), "label": label[order]})

    truth = {
        "item_id": item_ids, "item_attributes": codes, "attribute_names": np.array(names),
        "attribute_modality": np.array([MODALITY[a] for a in names]),
        "attribute_sizes": np.array([len(attributes[a]) for a in names]), "attribute_weight": weight,
        "item_popularity": popularity, "user_id": np.arange(1, size.users + 1, dtype=np.int64),
        "user_tastes": tastes, "user_segment": segment, "interaction_logit": logit[order],
    }
    tag = f"{GENERATOR_VERSION}|{preset}|{int(seed)}" + (f"|{AUDIO_VERSION}" if audio else "")
    fingerprint = hashlib.sha256(tag.encode()).hexdigest()[:16]
    users = pd.DataFrame({"user_id": truth["user_id"]})   # the segment stays hidden (ground truth only)
    return RawDataset(name=f"synthetic-{preset}", items=items, interactions=interactions, users=users,
                      attribute_columns=tuple(names), load_image=SyntheticImages(items, nuisance),
                      fingerprint=fingerprint, ground_truth=truth, image_size=IMAGE_SIZE,
                      loaders={"audio": SyntheticAudio(items, sound)} if audio else {})
