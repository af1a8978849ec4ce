"""The project's own documented error types: everything a user can cause raises one of these."""
from __future__ import annotations

from em3.config import ConfigError


class EM3Error(Exception):
    """Base of the errors a user can cause (bad data, bad paths, missing runs)."""


class DataError(EM3Error, ValueError):
    """A dataset file, row or field is missing or malformed; the message names which."""


class CacheError(EM3Error):
    """A cache or checkpoint file is corrupt, truncated or from another input; the message names its path."""


class RunError(EM3Error):
    """A training run failed (NaN loss, cancelled, unknown run id); the message says why."""


__all__ = ["EM3Error", "DataError", "CacheError", "RunError", "ConfigError"]
