"""Per-item files read from a folder (images, sounds): a missing or unreadable file is a masked item (None),
counted, never an error. Subclasses say how to decode a file and which errors mean "unreadable"."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)


class FolderFiles:
    """item_id -> the decoded file, or None. `missing` holds the items with no path or no file; `unreadable`
    the items whose file failed to decode, with why. Both fill as items are asked for."""

    kind = "file"                                        # for log messages
    errors: tuple[type[BaseException], ...] = (OSError, ValueError)
    warn = False                                         # log every masked item (else only counted)

    def __init__(self, paths: Mapping[int, str | None]) -> None:
        self._paths = {int(k): (v if isinstance(v, str) and v else None) for k, v in paths.items()}
        self.missing: set[int] = set()
        self.unreadable: dict[int, str] = {}   # item_id -> why

    def path(self, item_id: int) -> str | None:
        return self._paths.get(int(item_id))

    def decode(self, path: str) -> Any:
        raise NotImplementedError

    def __call__(self, item_id: int) -> Any | None:
        item_id = int(item_id)
        p = self._paths.get(item_id)
        if not p or not Path(p).is_file():
            self.missing.add(item_id)
            if p and self.warn:
                log.warning("%s of item_id %s: %s does not exist; masked", self.kind, item_id, p)
            return None
        try:
            return self.decode(p)
        except self.errors as e:
            self.unreadable[item_id] = f"{p}: {type(e).__name__}: {e}"
            if self.warn:
                log.warning("%s of item_id %s is unreadable (%s); masked", self.kind, item_id, self.unreadable[item_id])
            return None
