"""Error types shared by every part of the package.

Invalid user input raises a subclass of :class:`NasError` (itself a ``ValueError``),
whose message names what was wrong and what is allowed. The CLI turns these into one
line on stderr and exit code 2.
"""
from __future__ import annotations

__all__ = ["NasError", "SpaceError", "ArchError", "DataError", "ArtifactError"]


class NasError(ValueError):
    """Root of every user-facing error raised by this package."""


class SpaceError(NasError):
    """A search space file or value is invalid."""


class ArchError(NasError):
    """An architecture is malformed or outside its search space."""


class DataError(NasError):
    """A dataset spec, path or file is invalid."""


class ArtifactError(NasError):
    """A run dir, checkpoint, table or predictor is missing, corrupted or belongs elsewhere."""
