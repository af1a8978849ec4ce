"""Item images read from a folder: a missing or unreadable file is a masked image (None), counted, never an error."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from PIL import Image

from em3.data.folder_files import FolderFiles
from em3.data.schema import RawDataset


class FolderImages(FolderFiles):
    """`load_image` of a folder-backed dataset: item_id -> RGB image, or None (missing, or truncated, corrupt,
    not an image: see FolderFiles)."""

    kind = "image"
    errors = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

    def decode(self, path: str) -> Image.Image:
        with Image.open(path) as img:
            img.load()   # decode now: a truncated file fails here, not later in the encoder
            return img.convert("RGB")


@dataclass(frozen=True)
class ImageCoverage:
    """How many items have a usable image."""

    items: int
    readable: int
    missing: int         # no path, or no file
    unreadable: int      # a file that failed to decode
    examples: tuple[str, ...] = ()   # a few unreadable files with the reason

    @property
    def share(self) -> float:
        return self.readable / self.items if self.items else 0.0


def image_coverage(raw: RawDataset, *, load: Callable[[int], Image.Image | None] | None = None) -> ImageCoverage:
    """Try every item's image once and count readable, missing and unreadable ones."""
    load = load or raw.load_image
    readable = missing = unreadable = 0
    examples: list[str] = []
    for item_id in raw.items["item_id"].to_numpy():
        img = load(int(item_id))
        if img is not None:
            readable += 1
            continue
        why = getattr(load, "unreadable", {}).get(int(item_id))
        if why is None:
            missing += 1
        else:
            unreadable += 1
            if len(examples) < 3:
                examples.append(why)
    return ImageCoverage(items=len(raw.items), readable=readable, missing=missing,
                         unreadable=unreadable, examples=tuple(examples))
