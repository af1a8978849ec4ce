"""How a synthetic item's latent attributes become its picture (PIL) and its words.

Image-only attributes (shape, colour, pattern) are drawn and never written; text-only
attributes (genre, mood) are written and never drawn. Everything else in either
modality is seeded nuisance: background tint, position, size, rotation, filler words.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = (64, 64)   # (H, W)

IMAGE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "star", "diamond", "cross"),
    "colour": ("red", "green", "blue", "yellow", "purple", "orange"),
    "pattern": ("solid", "stripes", "dots", "checker"),
}
TEXT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "genre": ("mystery", "comedy", "adventure", "romance", "horror", "documentary", "fantasy", "western"),
    "mood": ("cheerful", "gloomy", "tense", "calm", "quirky"),
}

PALETTE = {"red": (210, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 210),
           "yellow": (235, 205, 40), "purple": (140, 50, 170), "orange": (240, 130, 30)}

# Synonyms so a text model must group words, not memorise one token per value.
TEXT_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "genre": {"mystery": ("mystery", "whodunit", "detective"), "comedy": ("comedy", "farce", "sitcom"),
              "adventure": ("adventure", "quest", "expedition"), "romance": ("romance", "love", "courtship"),
              "horror": ("horror", "haunting", "nightmare"), "documentary": ("documentary", "chronicle", "report"),
              "fantasy": ("fantasy", "wizardry", "legend"), "western": ("western", "frontier", "cowboy")},
    "mood": {"cheerful": ("cheerful", "joyful", "upbeat"), "gloomy": ("gloomy", "bleak", "somber"),
             "tense": ("tense", "gripping", "suspenseful"), "calm": ("calm", "gentle", "serene"),
             "quirky": ("quirky", "offbeat", "whimsical")},
}
# Neutral filler: no shape, colour, pattern, genre or mood word appears here.
FILLER = ("about", "the", "a", "town", "family", "journey", "city", "friends", "secret", "river", "winter",
          "summer", "letter", "village", "island", "machine", "garden", "station", "brother", "sister",
          "teacher", "doctor", "captain", "harbor", "mountain", "bridge", "voice", "promise", "road", "house",
          "night", "morning", "stranger", "neighbor", "market", "school", "festival", "train", "kingdom")
TITLE_ADJ = ("Silent", "Last", "Hidden", "Little", "Distant", "Broken", "Golden", "Second", "Lost", "Northern",
             "Quiet", "Open", "Final", "Long", "Late", "Early", "Empty", "Wild", "Old", "New")
TITLE_NOUN = ("Harbor", "Letter", "Station", "Garden", "Road", "Promise", "Bridge", "Village", "Island",
              "Machine", "Kingdom", "Voice", "Market", "Festival", "Mountain", "Neighbor", "Stranger", "Winter")


def item_text(genre: str, mood: str, *, rng: np.random.Generator) -> tuple[str, str]:
    """(title, text) of one item: a neutral title, then a description mixing attribute words with filler."""
    title = f"{rng.choice(TITLE_ADJ)} {rng.choice(TITLE_NOUN)}"
    words = [str(rng.choice(TEXT_WORDS["genre"][genre])), str(rng.choice(TEXT_WORDS["mood"][mood]))]
    # 1-3 filler words (4-8 in synthetic/1, where they drowned the two attribute words)
    words += [str(w) for w in rng.choice(FILLER, size=int(rng.integers(1, 4)))]
    rng.shuffle(words)
    return title, f"{title}. A {' '.join(words)}."


def _outline(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]] | None:
    """Polygon vertices of a shape (None for the circle, drawn as an ellipse)."""
    def ring(n: int, radii: list[float], offset: float) -> list[tuple[float, float]]:
        return [(cx + radii[k % len(radii)] * math.cos(offset + rot + 2 * math.pi * k / n),
                 cy + radii[k % len(radii)] * math.sin(offset + rot + 2 * math.pi * k / n)) for k in range(n)]
    if shape == "circle":
        return None
    if shape == "square":
        return ring(4, [r], math.pi / 4)
    if shape == "triangle":
        return ring(3, [r], -math.pi / 2)
    if shape == "star":
        return ring(10, [r, 0.45 * r], -math.pi / 2)
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)]
    if shape == "cross":
        a, b = 0.33 * r, r
        return [(cx - a, cy - b), (cx + a, cy - b), (cx + a, cy - a), (cx + b, cy - a), (cx + b, cy + a),
                (cx + a, cy + a), (cx + a, cy + b), (cx - a, cy + b), (cx - a, cy + a), (cx - b, cy + a),
                (cx - b, cy - a), (cx - a, cy - a)]
    raise ValueError(f"unknown shape {shape!r}")


def _texture(pattern: str, colour: tuple[int, int, int], size: tuple[int, int], phase: int) -> Image.Image:
    """A full-size fill of the colour carrying the pattern in a darker shade."""
    h, w = size
    tex = Image.new("RGB", (w, h), colour)
    dark = tuple(int(c * 0.45) for c in colour)
    draw = ImageDraw.Draw(tex)
    if pattern == "stripes":
        for x in range(-h + phase % 8, w, 8):
            draw.line([(x, 0), (x + h, h)], fill=dark, width=3)
    elif pattern == "dots":
        for y in range(2 + phase % 7, h, 7):
            for x in range(2 + phase % 7, w, 7):
                draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=dark)
    elif pattern == "checker":
        for y in range(0, h, 6):
            for x in range(((y // 6) % 2) * 6, w, 12):
                draw.rectangle([x, y, x + 5, y + 5], fill=dark)
    elif pattern != "solid":
        raise ValueError(f"unknown pattern {pattern!r}")
    return tex


def draw_item(*, shape: str, colour: str, pattern: str, background: tuple[int, int, int],
              centre: tuple[float, float], radius: float, rotation: float, tint: tuple[int, int, int],
              phase: int) -> Image.Image:
    """One item's RGB picture: a patterned, coloured shape on a tinted background."""
    h, w = IMAGE_SIZE
    img = Image.new("RGB", (w, h), background)
    rgb = tuple(int(np.clip(c + t, 0, 255)) for c, t in zip(PALETTE[colour], tint))
    mask = Image.new("L", (w, h), 0)
    mdraw = ImageDraw.Draw(mask)
    cx, cy = centre
    poly = _outline(shape, cx, cy, radius, rotation)
    if poly is None:
        mdraw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        mdraw.polygon(poly, fill=255)
    img.paste(_texture(pattern, rgb, IMAGE_SIZE, phase), (0, 0), mask)
    return img
